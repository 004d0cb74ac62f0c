"""Google Container Registry and Artifact Registry: OAuth access tokens or ``_json_key``.

``gcr: {mode: accessToken}`` (the default) trades a service-account key (the ``secretRef``
Secret's ``key.json``) or, with no secretRef, Application Default Credentials (GKE workload
identity, the metadata server, ``GOOGLE_APPLICATION_CREDENTIALS``) for an access token that
lives about an hour; registries take it as the password of ``oauth2accesstoken``.
``gcr: {mode: jsonKey}`` hands out the key itself as the password of ``_json_key``: it never
expires, which is why it is not the default.

Two limits keep a token no wider than its entry. The scope is read-only Cloud Storage, the
narrowest that GCR and Artifact Registry accept for a pull: a namespace holding the token
holds no other power of the identity. And the signed assertion goes only to Google's token
endpoint over https: whoever writes the key Secret could otherwise name any ``token_uri``
and have its answer distributed as the credential (``gcr.allowedTokenUris`` names a private
endpoint explicitly).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth
import requests
from google.auth import credentials as google_credentials
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from webhook.jsontypes import JsonObject
from webhook.providers import Credential, CredentialUnavailable
from webhook.registries import Registry

# Pull needs only this (GCR is served from Cloud Storage; Artifact Registry takes the same
# read-only scope for downloads); cloud-platform would open every API the identity may call.
SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
# What Google's keys name: the current endpoint, and the one older keys still carry.
GOOGLE_TOKEN_URIS = ("https://oauth2.googleapis.com/token", "https://accounts.google.com/o/oauth2/token")
KEY_FILE = "key.json"
ACCESS_TOKEN_USER = "oauth2accesstoken"
JSON_KEY_USER = "_json_key"
# google-auth leaves ``expiry`` empty only for credentials it believes never expire; an
# OAuth access token always does, so assume a conservative life rather than "forever".
_ASSUMED_LIFE = timedelta(minutes=30)


class _TimedRequest(Request):
    """google-auth's requests transport with a bounded timeout (its default is 120 s)."""

    def __init__(self, session: requests.Session, timeout: float):
        super().__init__(session)
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None,
                 timeout: float | None = None, **kwargs: Any) -> google_transport.Response:
        # google-auth leaves Request.__call__ unannotated (untyped_calls_exclude misses super()).
        response: google_transport.Response = super().__call__(  # type: ignore[no-untyped-call]
            url, method, body, headers, timeout=timeout or self._timeout, **kwargs)
        return response


class GcrProvider:
    def __init__(self, *, timeout: float = 10.0):
        self._timeout = timeout

    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        mode = registry.gcr.mode if registry.gcr is not None else "accessToken"
        if mode == "jsonKey":
            key_text, info = _read_key(registry, material)
            _service_account(registry, info)  # a key registries would refuse fails here, not at pull time
            return Credential(JSON_KEY_USER, key_text, None)
        with requests.Session() as session:
            request = _TimedRequest(session, self._timeout)
            try:
                credentials = _credentials(registry, material, request)
                credentials.refresh(request)
            except google_exceptions.RefreshError as exc:
                raise CredentialUnavailable(
                    f"{registry.id}: Google token request failed: {_oauth_error(exc)}") from None
            except google_exceptions.GoogleAuthError as exc:
                # TransportError (connection refused, timeouts), DefaultCredentialsError (no
                # ADC): the class name is the code; messages can quote paths and URLs.
                raise CredentialUnavailable(f"{registry.id}: Google auth failed: {type(exc).__name__}") from None
        token = getattr(credentials, "token", None)
        if not token:
            raise CredentialUnavailable(f"{registry.id}: Google returned no access token")
        return Credential(ACCESS_TOKEN_USER, token, _expiry(credentials.expiry))


def _credentials(registry: Registry, material: Mapping[str, bytes] | None,
                 request: Request) -> google_credentials.Credentials:
    if registry.secret_ref is None:
        # ADC: workload identity on GKE, the metadata server, or GOOGLE_APPLICATION_CREDENTIALS.
        credentials, _project = google.auth.default(scopes=[SCOPE], request=request)
        return credentials
    _, info = _read_key(registry, material)
    allowed = GOOGLE_TOKEN_URIS + (registry.gcr.allowed_token_uris if registry.gcr is not None else ())
    if info["token_uri"] not in allowed:
        # The URI itself is not echoed: it is the Secret's content, chosen by whoever wrote it.
        raise CredentialUnavailable(
            f"{_where(registry)} key {KEY_FILE} names a token_uri that is not Google's token endpoint "
            f"(list a private one in gcr.allowedTokenUris)")
    return _service_account(registry, info)


def _service_account(registry: Registry, info: JsonObject) -> service_account.Credentials:
    try:
        # The OAuth flow goes to the key's own token_uri (as google-auth does by default).
        credentials: service_account.Credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE])
        return credentials
    except (ValueError, TypeError, IndexError):
        # MalformedError is a ValueError; a garbled PEM surfaces as ValueError/TypeError from
        # cryptography. Their text can quote the key, so only say which key is unusable.
        raise CredentialUnavailable(f"{_where(registry)} key {KEY_FILE} is not a usable service-account key") from None


def _read_key(registry: Registry, material: Mapping[str, bytes] | None) -> tuple[str, JsonObject]:
    if registry.secret_ref is None:
        raise CredentialUnavailable(f"{registry.id}: gcr mode jsonKey needs a secretRef holding {KEY_FILE}")
    if material is None:
        raise CredentialUnavailable(f"{_where(registry)} not found")
    raw = material.get(KEY_FILE)
    if not raw:
        raise CredentialUnavailable(f"{_where(registry)} lacks key(s) {KEY_FILE}")
    try:
        text = raw.decode("utf-8").strip()
        info = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise CredentialUnavailable(f"{_where(registry)} key {KEY_FILE} is not JSON") from None
    required = ("client_email", "private_key", "token_uri")
    if not isinstance(info, dict) or info.get("type") != "service_account" or not all(
        isinstance(info.get(field), str) and info.get(field) for field in required
    ):
        raise CredentialUnavailable(
            f"{_where(registry)} key {KEY_FILE} is not a service-account key "
            f"(type service_account with {', '.join(required)})"
        )
    return text, info


def _where(registry: Registry) -> str:
    return f"{registry.id}: credentials Secret {registry.secret_ref!r}"


def _oauth_error(exc: google_exceptions.RefreshError) -> str:
    # google-auth raises RefreshError(details, response_data): the OAuth "error" field
    # (invalid_grant, unauthorized_client, ...) is the code; the description is not shown.
    response = exc.args[1] if len(exc.args) > 1 else None
    error = response.get("error") if isinstance(response, Mapping) else None
    if isinstance(error, str):
        return error[:64]
    return type(exc).__name__


def _expiry(expiry: datetime | None) -> datetime:
    if expiry is None:
        return datetime.now(UTC) + _ASSUMED_LIFE
    # google-auth keeps expiry as a naive datetime in UTC.
    return expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry.astimezone(UTC)
