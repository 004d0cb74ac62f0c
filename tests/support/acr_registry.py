"""A real registry that logs clients in the way ACR does: ``docker-registry`` in token-auth mode.

Debian's docker-registry (distribution 2.8) is configured with ``auth.token``: it answers
``401 Bearer realm=...`` and accepts only JWTs signed by a key its ``rootcertbundle`` trusts.
``AcrTokenService`` is that realm. Like an ACR login server's ``/oauth2/token``, it takes HTTP
basic auth with the user ``00000000-0000-0000-0000-000000000000`` and an ACR refresh token as
the password, checks the refresh token (``AcrExchange.verify_refresh``: signature, audience,
expiry) and issues a registry token for the pull it was asked for. A pusher account (the
registry fixture's own user) may also push, so the test image can be uploaded.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
import uuid
from pathlib import Path

import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.entra import AcrExchange, HttpsJson
from tests.support.registry import PrivateRegistry
from tests.support.sensitive import register

ACR_USER = "00000000-0000-0000-0000-000000000000"
ISSUER = "regcred-test-acr-token-service"
REGISTRY_TOKEN_LIFE = 300


class AcrTokenService:
    def __init__(self, ca: trustme.CA, exchange: AcrExchange, service: str, pusher: tuple[str, str]):
        self._exchange, self.service, self._pusher = exchange, service, pusher
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = _self_signed(self._key)
        self.refused = 0
        self.granted: list[tuple[str, list]] = []  # (user, access) of every registry token issued
        self._http = HttpsJson(ca, self._route)
        self.realm = f"{self._http.url}/oauth2/token"

    def stop(self) -> None:
        self._http.stop()

    def registry_auth(self, root_bundle: Path) -> dict:
        """docker-registry's ``auth`` section trusting this service."""
        root_bundle.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return {"token": {"realm": self.realm, "service": self.service, "issuer": ISSUER,
                          "rootcertbundle": str(root_bundle)}}

    def _route(self, method: str, path: str, query: dict, headers: dict):
        if (method, path.split("?")[0]) != ("GET", "/oauth2/token"):
            return 404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]}
        user, password = _basic(headers.get("Authorization", ""))
        allowed = self._allowed(user, password, query.get("service", ""))
        if allowed is None:
            self.refused += 1
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        access = []
        scope = query.get("scope", "")
        if scope.count(":") == 2:
            kind, name, actions = scope.split(":")
            granted = [action for action in actions.split(",") if action in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": self.service, "iat": now, "nbf": now - 5,
                  "exp": now + REGISTRY_TOKEN_LIFE, "jti": str(uuid.uuid4()), "access": access}
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": [base64.b64encode(der).decode()]})
        register(token, "registry token of the test ACR token service")
        self.granted.append((user, access))
        return 200, {"token": token, "access_token": token, "expires_in": REGISTRY_TOKEN_LIFE}

    def _allowed(self, user: str, password: str, service: str) -> tuple[str, ...] | None:
        if service != self.service:
            return None
        if user == ACR_USER and self._exchange.verify_refresh(password, service) is not None:
            return ("pull",)
        if user == self._pusher[0] and secrets.compare_digest(password, self._pusher[1]):
            return ("pull", "push")
        return None


def start_acr_registry(workdir: Path, ca: trustme.CA, ca_pem: Path, exchange: AcrExchange,
                       service: str) -> tuple[PrivateRegistry, AcrTokenService]:
    """docker-registry in token-auth mode behind a new AcrTokenService; skopeo trusts both."""
    pusher = ("pusher", "push-" + secrets.token_urlsafe(18))
    register(pusher[1], "password of the test registry's pusher")
    tokens = AcrTokenService(ca, exchange, service, pusher)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        registry = PrivateRegistry.start(workdir, *pusher,
                                         config_overrides={"auth": tokens.registry_auth(workdir / "token-root.crt")})
    except BaseException:
        tokens.stop()
        raise
    # skopeo reads every *.crt in its cert dir as a CA: the realm's certificate is the stand-ins'.
    (registry.cert_dir / "token-service-ca.crt").write_bytes(ca_pem.read_bytes())
    return registry, tokens


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regcred test ACR token signer")])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
