"""Azure Container Registry: Entra ID identities exchanged for short-lived ACR refresh tokens.

The flow is ACR's "AAD-OAuth" one. An Entra access token for the ACR audience comes from
azure-identity: with a ``secretRef``, a service principal's client secret
(``ClientSecretCredential``); without, ``DefaultAzureCredential`` (AKS workload identity's
federated token file, managed identity, ...). The login server's ``/oauth2/exchange`` trades it
for a refresh token, which registries accept as the password of the all-zero user.

The scope is ``https://containerregistry.azure.net/.default`` in every cloud. ARM's audience
(``https://management.azure.com``, what ESO's generator asks for since its workload-identity
fix) also works, but only while the registry allows ARM-audience tokens; ACR's own audience
works either way. The Entra authority follows the host's cloud (``.azurecr.cn``: China,
``.azurecr.us``: US Government) unless ``AZURE_AUTHORITY_HOST``, azure-identity's own
setting, names one.

The expiry is the refresh token's ``exp`` claim: the documented three hours are not what
every registry hands out. ``REGCRED_ACR_ENDPOINT_URL`` replaces ``https://<login server>``
for the exchange (private endpoints, tests); the CA bundle is requests' ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import jwt
import requests
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.identity import (
    AzureAuthorityHosts,
    ClientSecretCredential,
    CredentialUnavailableError,
    DefaultAzureCredential,
)

from webhook.jsontypes import JsonObject
from webhook.providers import Credential, CredentialUnavailable, ascii_keys
from webhook.registries import Registry

SCOPE = "https://containerregistry.azure.net/.default"
USERNAME = "00000000-0000-0000-0000-000000000000"
ENDPOINT_ENV = "REGCRED_ACR_ENDPOINT_URL"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
MATERIAL_KEYS = ("tenant_id", "client_id", "client_secret")
_AUTHORITIES = {
    "io": AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
    "cn": AzureAuthorityHosts.AZURE_CHINA,
    "us": AzureAuthorityHosts.AZURE_GOVERNMENT,
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Entra secrets are printable ASCII (letters, digits, ~ . _ -); anything else is a paste error.
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
# Entra's answer names its error as "AADSTS<digits>: <description>"; the code alone is shown.
_AADSTS = re.compile(r"\bAADSTS\d{4,7}\b")
_OAUTH_ERROR = re.compile(r"\b(invalid_client|invalid_grant|invalid_request|invalid_resource|invalid_scope|"
                          r"unauthorized_client|unsupported_grant_type|temporarily_unavailable)\b")


class AcrProvider:
    def __init__(self, *, timeout: float = 10.0):
        self._timeout = timeout

    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        principal = _service_principal(registry, material) if registry.secret_ref else None
        options_tenant = registry.acr.tenant_id if registry.acr is not None else None
        access = self._entra_token(registry, principal, options_tenant)
        tenant = options_tenant or (principal or {}).get("tenant_id") or _claims(access).get("tid")
        if not isinstance(tenant, str) or not tenant:
            raise CredentialUnavailable(f"{registry.id}: no Entra tenant: set acr.tenantId")
        refresh = self._exchange(registry, tenant, access)
        return Credential(USERNAME, refresh, _expiry(registry, refresh))

    def _entra_token(self, registry: Registry, principal: Mapping[str, str] | None, tenant: str | None) -> str:
        common = {
            "authority": authority_for(registry),
            # An authority the operator named is used as given: asking login.microsoftonline.com
            # whether it knows it would fail in air-gapped clouds.
            "disable_instance_discovery": bool(os.environ.get(AUTHORITY_ENV)),
            "connection_timeout": min(self._timeout, 5.0),
            "read_timeout": self._timeout,
            "retry_total": 2,  # the token cache's backoff does the longer waiting
        }
        credential: ClientSecretCredential | DefaultAzureCredential
        try:
            if principal is not None:
                credential = ClientSecretCredential(
                    tenant or principal["tenant_id"], principal["client_id"], principal["client_secret"], **common
                )
            else:
                extra = {"workload_identity_tenant_id": tenant} if tenant else {}
                credential = DefaultAzureCredential(**common, **extra)
            with credential:
                return credential.get_token(SCOPE).token
        except CredentialUnavailableError:
            # DefaultAzureCredential tried every source; its text lists paths and environment.
            raise CredentialUnavailable(
                f"{registry.id}: no Azure identity found (workload identity, managed identity)") from None
        except ClientAuthenticationError as exc:
            raise CredentialUnavailable(f"{registry.id}: Entra token request failed: {_entra_code(exc)}") from None
        except (AzureError, ValueError) as exc:
            # Connection errors, timeouts, a malformed authority: the class name is the code.
            raise CredentialUnavailable(f"{registry.id}: Entra token request failed: {type(exc).__name__}") from None

    def _exchange(self, registry: Registry, tenant: str, access: str) -> str:
        base = os.environ.get(ENDPOINT_ENV) or f"https://{registry.host}"
        form = {"grant_type": "access_token", "service": registry.host, "tenant": tenant, "access_token": access}
        try:
            response = requests.post(f"{base.rstrip('/')}/oauth2/exchange", data=form,
                                     timeout=(min(self._timeout, 5.0), self._timeout))
        except requests.RequestException as exc:
            raise CredentialUnavailable(f"{registry.id}: ACR token exchange failed: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            raise CredentialUnavailable(
                f"{registry.id}: ACR token exchange refused: {response.status_code}{_acr_code(body)}"
            )
        refresh = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(refresh, str) or not refresh:
            raise CredentialUnavailable(f"{registry.id}: ACR token exchange answered no refresh token")
        return refresh


def authority_for(registry: Registry) -> str:
    """The Entra authority for ``registry``: AZURE_AUTHORITY_HOST if set, else its host's cloud's."""
    authority = os.environ.get(AUTHORITY_ENV) or _AUTHORITIES[registry.host.rsplit(".", 1)[1]]
    return authority if "://" in authority else f"https://{authority}"


def _service_principal(registry: Registry, material: Mapping[str, bytes] | None) -> dict[str, str]:
    shapes = {key: (_PRINTABLE, "secret") if key == "client_secret" else (_GUID, "GUID") for key in MATERIAL_KEYS}
    tenant_elsewhere = registry.acr is not None and registry.acr.tenant_id is not None
    return ascii_keys(registry, material, shapes, required=MATERIAL_KEYS[1:] if tenant_elsewhere else MATERIAL_KEYS)


def _entra_code(exc: ClientAuthenticationError) -> str:
    # azure-identity's message carries Entra's error_description, which can quote request
    # details; only the codes in it are shown (invalid_client AADSTS7000215).
    text = str(exc.message or "")
    codes = [m.group(0) for m in (_OAUTH_ERROR.search(text), _AADSTS.search(text)) if m]
    return " ".join(codes) or type(exc).__name__


def _acr_code(body: object) -> str:
    # ACR answers {"errors": [{"code": "UNAUTHORIZED", "message": ...}]}; the code says enough.
    errors = body.get("errors") if isinstance(body, dict) else None
    code = errors[0].get("code") if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None
    return f" {code[:32]}" if isinstance(code, str) and re.fullmatch(r"[A-Z_]{1,32}", code[:32]) else ""


def _claims(token: str) -> JsonObject:
    # Read only: regcred is not the token's audience and checks no signature; the registry does.
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _expiry(registry: Registry, refresh: str) -> datetime:
    expires = _claims(refresh).get("exp")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        raise CredentialUnavailable(f"{registry.id}: ACR refresh token has no exp claim")
    try:
        return datetime.fromtimestamp(expires, UTC)
    except (OverflowError, OSError, ValueError):
        raise CredentialUnavailable(f"{registry.id}: ACR refresh token has no usable exp claim") from None
