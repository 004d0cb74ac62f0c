"""Local stand-ins for Microsoft Entra ID and an ACR login server's ``/oauth2/exchange``.

``EntraStandIn`` serves what azure-identity (through MSAL) asks an authority for: the tenant's
``/v2.0/.well-known/openid-configuration`` and its token endpoint, for the client-credentials
grant with a client secret or with a federated assertion (the Kubernetes ServiceAccount token
AKS workload identity mounts). It signs RS256 access tokens for the ACR audience and refuses
the way Entra does, with ``AADSTS`` codes in ``error_description`` and ``error_codes``.

``AcrExchange`` does what a login server's exchange does: verify the Entra access token's
signature, audience and tenant, and answer a refresh token whose ``exp`` the test chooses.
``verify_refresh`` is what the login server's own token endpoint checks (the end-to-end test).

Both listen on 127.0.0.1 over HTTPS with one trustme CA; the ``azure`` fixture points
``AZURE_AUTHORITY_HOST``, ``REGCRED_ACR_ENDPOINT_URL`` and ``REQUESTS_CA_BUNDLE`` at them.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.https_json import Answer, HttpsJson
from tests.support.sensitive import register

ACR_AUDIENCE = "https://containerregistry.azure.net"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # what AKS workload identity projects
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLUSTER_ISSUER = "https://oidc.regcred-test.example/cluster"

@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None = None
    subject: str | None = None  # federated credential: the ServiceAccount it trusts


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class EntraStandIn:
    ca: trustme.CA
    access_life: int = 3599
    apps: dict[str, App] = field(default_factory=dict)
    issued: list[dict] = field(default_factory=list)  # claims of the access tokens handed out
    refused: list[str] = field(default_factory=list)  # AADSTS codes answered
    calls: int = 0

    def __post_init__(self) -> None:
        self.signing_key, self.cluster_key = _key(), _key()
        self._lock = threading.Lock()
        self._http = HttpsJson(self.ca, self._route)
        self.authority = self._http.url

    def stop(self) -> None:
        self._http.stop()

    def reset(self) -> None:
        with self._lock:
            self.apps.clear()
            self.issued.clear()
            self.refused.clear()
            self.calls = 0

    def service_principal(self, tenant: str | None = None) -> App:
        """A new app registration with a client secret, in ``tenant`` (a new one by default)."""
        app = App(tenant or str(uuid.uuid4()), str(uuid.uuid4()), secret="sp~" + secrets.token_urlsafe(30))
        register(app.secret, "Entra client secret")
        with self._lock:
            self.apps[app.client_id] = app
        return app

    def federated_app(self, subject: str, tenant: str | None = None) -> App:
        """A new app (or user-assigned identity) trusting the ServiceAccount ``subject``."""
        app = App(tenant or str(uuid.uuid4()), str(uuid.uuid4()), subject=subject)
        with self._lock:
            self.apps[app.client_id] = app
        return app

    def service_account_token(self, subject: str, *, life: int = 3600, audience: str = TOKEN_EXCHANGE_AUDIENCE) -> str:
        """A projected ServiceAccount token as the cluster's issuer signs it."""
        now = int(time.time())
        token = jwt.encode({"iss": CLUSTER_ISSUER, "sub": subject, "aud": [audience], "iat": now, "exp": now + life},
                           self.cluster_key, algorithm="RS256")
        register(token, "projected ServiceAccount token")
        return token

    def _route(self, method: str, path: str, form: dict, headers: dict) -> Answer:
        parts = path.strip("/").split("/")
        if method == "GET" and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return 200, self._openid_configuration(parts[0])
        if method == "POST" and parts[1:] == ["oauth2", "v2.0", "token"]:
            with self._lock:
                self.calls += 1
            return self._token(parts[0], form)
        return 404, {"error": "not_found"}

    def _openid_configuration(self, tenant: str) -> dict:
        base = f"{self.authority}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        }

    def _token(self, tenant: str, form: dict) -> Answer:
        with self._lock:
            app = self.apps.get(form.get("client_id", ""))
        if form.get("grant_type") != CLIENT_CREDENTIALS:
            return self._refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if not any(a.tenant == tenant for a in self.apps.values()):
            return self._refuse(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if app is None or app.tenant != tenant:
            return self._refuse(400, "unauthorized_client", 700016, "Application not found in the directory.")
        if form.get("scope", "").split() != [f"{ACR_AUDIENCE}/.default"]:
            return self._refuse(400, "invalid_resource", 500011, "The resource principal was not found in the tenant.")
        if "client_assertion" in form:
            refusal = self._check_assertion(app, form)
        elif app.secret is None or not secrets.compare_digest(form.get("client_secret", ""), app.secret):
            refusal = self._refuse(401, "invalid_client", 7000215, "Invalid client secret provided.")
        else:
            refusal = None
        if refusal is not None:
            return refusal
        now = int(time.time())
        claims = {"aud": ACR_AUDIENCE, "iss": f"https://sts.windows.net/{tenant}/", "tid": tenant,
                  "appid": app.client_id, "oid": app.client_id, "iat": now, "nbf": now, "exp": now + self.access_life}
        token = jwt.encode(claims, self.signing_key, algorithm="RS256")
        register(token, "Entra access token")
        with self._lock:
            self.issued.append(claims)
        return 200, {"token_type": "Bearer", "expires_in": self.access_life, "ext_expires_in": self.access_life,
                     "access_token": token}

    def _check_assertion(self, app: App, form: dict) -> Answer | None:
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION or app.subject is None:
            return self._refuse(400, "invalid_client", 700212, "No matching federated identity record found.")
        try:
            claims = jwt.decode(form["client_assertion"], self.cluster_key.public_key(), algorithms=["RS256"],
                                audience=TOKEN_EXCHANGE_AUDIENCE, issuer=CLUSTER_ISSUER)
        except jwt.ExpiredSignatureError:
            return self._refuse(400, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        except jwt.InvalidTokenError:
            return self._refuse(400, "invalid_client", 700211,
                                "No matching federated identity record found for presented assertion.")
        if claims.get("sub") != app.subject:
            return self._refuse(400, "invalid_client", 700213,
                                "No matching federated identity record found for presented assertion subject.")
        return None

    def _refuse(self, status: int, error: str, code: int, text: str) -> Answer:
        with self._lock:
            self.refused.append(f"AADSTS{code}")
        trace = str(uuid.uuid4())
        return status, {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace}",
                        "error_codes": [code], "trace_id": trace, "correlation_id": str(uuid.uuid4())}


@dataclass
class AcrExchange:
    """An ACR login server's ``/oauth2/exchange``, trusting ``entra``'s signing key."""

    ca: trustme.CA
    entra: EntraStandIn
    refresh_life: int = 3 * 3600
    # None: serving. "unavailable": 503 to every call. "drop": connections closed unanswered.
    # "unauthorized": 401, as for a token of an identity without AcrPull. "no_exp": a refresh
    # token without an exp claim.
    outage: str | None = None
    issued: list[dict] = field(default_factory=list)  # claims of the refresh tokens handed out
    calls: int = 0
    # Stamps the refresh tokens' iat and exp: a test's Clock, so lives pass without waiting.
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.signing_key = _key()
        self._lock = threading.Lock()
        self._http = HttpsJson(self.ca, self._route)
        self.url = self._http.url

    def stop(self) -> None:
        self._http.stop()

    def reset(self) -> None:
        with self._lock:
            self.issued.clear()
            self.calls, self.outage, self.refresh_life, self.clock = 0, None, 3 * 3600, time.time

    def verify_refresh(self, token: str, service: str) -> dict | None:
        """The refresh token's claims if this server issued it for ``service`` and it is live."""
        try:
            return jwt.decode(token, self.signing_key.public_key(), algorithms=["RS256"], audience=service)
        except jwt.InvalidTokenError:
            return None

    def _route(self, method: str, path: str, form: dict, headers: dict) -> Answer | None:
        with self._lock:
            self.calls += 1
        if self.outage == "drop":
            return None
        if self.outage == "unavailable":
            return 503, {"errors": [{"code": "UNAVAILABLE", "message": "regcred test outage"}]}
        if self.outage == "unauthorized":
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "identity lacks AcrPull"}]}
        if (method, path) != ("POST", "/oauth2/exchange"):
            return 404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]}
        if form.get("grant_type") != "access_token" or not form.get("service"):
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": "grant_type access_token and service required"}]}
        try:
            claims = jwt.decode(form.get("access_token", ""), self.entra.signing_key.public_key(), algorithms=["RS256"],
                                audience=ACR_AUDIENCE)
        except jwt.InvalidTokenError:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid access token"}]}
        if claims.get("tid") != form.get("tenant"):
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "tenant does not match the token"}]}
        now = int(self.clock())
        refresh = {"jti": str(uuid.uuid4()), "sub": claims["oid"], "aud": form["service"], "tenant": claims["tid"],
                   "grant_type": "refresh_token", "iat": now, "nbf": now, "exp": now + self.refresh_life}
        if self.outage == "no_exp":
            del refresh["exp"]
        token = jwt.encode(refresh, self.signing_key, algorithm="RS256")
        register(token, "ACR refresh token")
        with self._lock:
            self.issued.append({**refresh, "refresh_token": token})
        return 200, {"refresh_token": token}


@dataclass
class Azure:
    entra: EntraStandIn
    acr: AcrExchange
    ca: trustme.CA  # issued both stand-ins' certificates
    ca_bundle: Path


@pytest.fixture(scope="session")
def azure_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    ca = trustme.CA(organization_name="regcred Entra stand-in CA")
    ca_pem = tmp_path_factory.mktemp("entra") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    entra = EntraStandIn(ca)
    acr = AcrExchange(ca, entra)
    yield Azure(entra, acr, ca, ca_pem)
    acr.stop()
    entra.stop()


@pytest.fixture
def azure(azure_servers: Azure, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Azure:
    """Both stand-ins, reset and trusted, with no ambient Azure identity in the environment.

    The CA bundle is appended to whatever REQUESTS_CA_BUNDLE already holds (the Google token
    server's, in the contract suite), since requests reads one bundle file.
    """
    azure_servers.entra.reset()
    azure_servers.acr.reset()
    bundle = tmp_path / "azure-ca-bundle.pem"
    earlier = os.environ.get("REQUESTS_CA_BUNDLE")
    earlier = Path(earlier).read_text() if earlier else ""
    bundle.write_text(earlier + azure_servers.ca_bundle.read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", azure_servers.entra.authority)
    monkeypatch.setenv("REGCRED_ACR_ENDPOINT_URL", azure_servers.acr.url)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_USERNAME", "AZURE_CLIENT_CERTIFICATE_PATH", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return azure_servers
