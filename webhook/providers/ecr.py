"""AWS ECR (private and Public): registry logins from ``GetAuthorizationToken``.

Credential material, in order: the ``secretRef`` Secret's static keys, else boto3's default
chain (IRSA web identity, EKS Pod Identity, instance profile, environment). With
``ecr.roleArn`` that identity first assumes the role (STS), for cross-account registries.

Endpoints are boto3's own: ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_ECR`` /
``AWS_ENDPOINT_URL_STS`` (VPC endpoints, tests against moto), ``AWS_USE_FIPS_ENDPOINT`` and
``AWS_MAX_ATTEMPTS`` are honoured natively; regcred adds no knob of its own.

Mints run in worker threads (the token cache's), several at a time for different registries.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from webhook.providers import Credential, CredentialUnavailable, ascii_keys
from webhook.registries import ECR_PUBLIC_HOST, Registry

# Admission waits at most a few seconds; a hung endpoint must not hold a worker thread for
# botocore's default 60 s.
_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 10}
# IAM's documented shapes: access key ids are 16-128 word characters; secrets and session
# tokens are printable ASCII without spaces. Anything else would be garbled in a header.
_KEY_ID = re.compile(r"^\w{16,128}$", re.ASCII)
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_MATERIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class EcrProvider:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None

    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        keys = _static_keys(registry, material) if registry.secret_ref else {}
        try:
            if registry.ecr is not None and registry.ecr.role_arn:
                keys = self._assume_role(registry, keys)
            if registry.host == ECR_PUBLIC_HOST:
                # ECR Public answers one authorizationData object, not a list.
                data = self._client("ecr-public", registry, keys).get_authorization_token().get("authorizationData")
            else:
                # registryIds is deprecated: the token opens every registry the identity may
                # read, so the caller's account and the registry's need not match.
                answer = self._client("ecr", registry, keys).get_authorization_token()
                data = next(iter(answer.get("authorizationData") or []), None)
        except ClientError as exc:
            # The error code (AccessDenied, ExpiredToken, ...) says what to fix; the message
            # can echo request details and is left out.
            code = exc.response.get("Error", {}).get("Code") or "ClientError"
            raise CredentialUnavailable(f"{registry.id}: AWS {exc.operation_name} failed: {code}") from None
        except BotoCoreError as exc:
            # Connection, timeout and missing-credential errors: the class name is the code;
            # their messages can quote endpoints or profile details, never shown.
            raise CredentialUnavailable(f"{registry.id}: AWS call failed: {type(exc).__name__}") from None
        return _credential(registry, data)

    def _client(self, service: str, registry: Registry, keys: Mapping[str, str]) -> Any:
        # boto3 Sessions are not thread-safe; their clients are. One Session builds every
        # client under a lock, so the service models it parsed (~100 ms of JSON, holding the
        # GIL and with it the event loop) are parsed once, and the default chain's
        # credentials (IRSA, Pod Identity) are resolved once and refreshed by botocore.
        # Explicit keys, when given, override that chain for this client only.
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            # The region comes from the registry host; ECR Public's API lives only in
            # us-east-1, which Registry.aws_region answers for public.ecr.aws.
            return self._session.client(service, region_name=registry.aws_region, config=_client_config(), **keys)

    def _assume_role(self, registry: Registry, keys: Mapping[str, str]) -> dict[str, str]:
        options = registry.ecr
        assert options is not None and options.role_arn is not None
        request = {
            "RoleArn": options.role_arn,
            # Shows up in the target account's CloudTrail: which regcred registry asked.
            "RoleSessionName": f"regcred-{registry.id}",
        }
        if options.external_id:
            request["ExternalId"] = options.external_id
        # STS in the registry's region: regional endpoints work in every partition (aws-cn
        # included), where the global endpoint only serves the commercial one.
        assumed = self._client("sts", registry, keys).assume_role(**request)["Credentials"]
        return {
            "aws_access_key_id": assumed["AccessKeyId"],
            "aws_secret_access_key": assumed["SecretAccessKey"],
            "aws_session_token": assumed["SessionToken"],
        }


def _client_config() -> Config:
    # botocore's default is still "legacy" retries: 5 attempts with up to 15 s of sleeps per
    # mint while the cloud answers 503 (measured in tests/test_cloud_outage.py). "standard"
    # makes 3 within about 3 s; the token cache's own backoff does the longer waiting.
    # AWS_RETRY_MODE and AWS_MAX_ATTEMPTS, boto3's own knobs, still win.
    if os.environ.get("AWS_RETRY_MODE"):
        return Config(**_TIMEOUTS)
    return Config(**_TIMEOUTS, retries={"mode": "standard"})


def _static_keys(registry: Registry, material: Mapping[str, bytes] | None) -> dict[str, str]:
    shapes = {key: (_KEY_ID if key == "aws_access_key_id" else _PRINTABLE, f"AWS {key.removeprefix('aws_')}")
              for key in _MATERIAL_KEYS}
    return ascii_keys(registry, material, shapes, required=_MATERIAL_KEYS[:2])


def _credential(registry: Registry, data: Any) -> Credential:
    """``data``: ECR's authorizationData entry as boto3 returned it, of any shape; checked here."""
    try:
        # The token is base64("AWS:<password>"); split at the first colon only.
        decoded = base64.b64decode(data["authorizationToken"], validate=True).decode("utf-8")
        username, password = decoded.split(":", 1)
        expires_at = data["expiresAt"]
    except (KeyError, TypeError, ValueError, binascii.Error, UnicodeDecodeError):
        raise CredentialUnavailable(f"{registry.id}: malformed ECR authorization data") from None
    if not username or not password or not isinstance(expires_at, datetime):
        raise CredentialUnavailable(f"{registry.id}: malformed ECR authorization data")
    # botocore parses timestamps into tzlocal(); the cache and Secrets speak UTC.
    return Credential(username, password, expires_at.astimezone(UTC))
