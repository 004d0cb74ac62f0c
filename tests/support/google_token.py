"""A local stand-in for Google's OAuth 2.0 token endpoint, and service-account keys for it.

``make_key`` generates an RSA key pair with cryptography and writes it into a key.json whose
``token_uri`` points here. The server does what oauth2.googleapis.com does with the JWT-bearer
grant: look the key up by ``kid``, verify the RS256 signature with that key's public half,
check ``iss``, ``aud``, ``scope`` and the lifetime, and answer
``access_token`` / ``expires_in`` / ``token_type``. Refusals carry Google's OAuth error codes
(``invalid_grant``). It serves HTTPS with a trustme CA: tests point ``REQUESTS_CA_BUNDLE``
at ``ca_bundle``, the way requests is told to trust a private CA.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.https_json import Answer, HttpsJson
from tests.support.sensitive import register, register_key_json

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The scope regcred must ask for: read-only storage, all a pull needs (README, gcr).
PULL_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
# google-auth addresses the assertion to Google's token endpoint whatever the key's token_uri
# says (the request itself goes to token_uri); Google accepts that audience.
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict  # the key.json document
    public_key: rsa.RSAPublicKey

    @property
    def text(self) -> str:
        return json.dumps(self.info, indent=2)

    @property
    def private_key_pem(self) -> str:
        return self.info["private_key"]


def make_key(token_uri: str, *, email: str = "puller@regcred-test.iam.gserviceaccount.com") -> ServiceAccountKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "regcred-test",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }
    key = ServiceAccountKey(info, private.public_key())
    register_key_json(key.text, f"service-account key of {email}")
    return key


class GoogleTokenServer:
    def __init__(self) -> None:
        self.expires_in = 3599
        self.issued: list[dict] = []  # verified assertion claims, plus the token handed out
        self.refused: list[str] = []  # OAuth error codes answered
        # None: serving. "drop": every exchange's connection closed unanswered. "unavailable":
        # every exchange answered 503 (google-auth retries that itself, 3 attempts over ~3 s).
        # "bad_gateway": 502, as a load balancer in front of a dead backend (not retried).
        self.outage: str | None = None
        self.outage_calls = 0
        self._keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        self._refusals: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._ca = trustme.CA()
        self._http: HttpsJson | None = None

    def start(self, directory: Path) -> GoogleTokenServer:
        self.ca_bundle = directory / "google-token-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_bundle))
        self._http = HttpsJson(self._ca, self._route)
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    @property
    def token_uri(self) -> str:
        assert self._http is not None, "start() first"
        return f"{self._http.url}/token"

    def new_key(self, **kwargs) -> ServiceAccountKey:
        """A key this server knows, as Google knows the keys of a service account."""
        key = make_key(self.token_uri, **kwargs)
        with self._lock:
            self._keys[key.info["private_key_id"]] = (key.info["client_email"], key.public_key)
        return key

    def refuse_next(self, code: str, description: str) -> None:
        """Refuse the next valid exchange with OAuth error ``code`` (Google revoked the key...)."""
        with self._lock:
            self._refusals.append((code, description))

    def reset(self) -> None:
        with self._lock:
            self.issued.clear()
            self.refused.clear()
            self._refusals.clear()
        self.expires_in = 3599
        self.outage, self.outage_calls = None, 0

    def exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("grant_type") != JWT_BEARER:
            return self._refuse("unsupported_grant_type")
        try:
            signing_input, header, claims, signature = _split_jwt(form.get("assertion", ""))
        except ValueError:
            return self._refuse("invalid_request")
        with self._lock:
            known = self._keys.get(header.get("kid", ""))
        if header.get("alg") != "RS256" or known is None:
            return self._refuse("invalid_grant")
        email, public_key = known
        try:
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self._refuse("invalid_grant")  # Google: "Invalid JWT Signature."
        now = time.time()
        if (
            claims.get("iss") != email
            or claims.get("aud") not in (GOOGLE_AUDIENCE, self.token_uri)
            or str(claims.get("scope", "")).split() != [PULL_SCOPE]
            or not claims.get("iat", 0) - 300 <= now < claims.get("exp", 0) <= claims.get("iat", 0) + 3600
        ):
            return self._refuse("invalid_grant")
        token = "ya29.test-" + secrets.token_urlsafe(32)
        register(token, "Google access token")
        with self._lock:
            refusal = self._refusals.pop(0) if self._refusals else None
            if refusal is None:
                self.issued.append({**claims, "access_token": token})
        if refusal is not None:
            return self._refuse(*refusal)
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def _route(self, method: str, path: str, form: dict, headers: dict) -> Answer | None:
        if self.outage is not None:
            self.outage_calls += 1
        if self.outage == "drop":
            return None
        if self.outage == "unavailable":
            return 503, {"error": "temporarily_unavailable", "error_description": "regcred test outage"}
        if self.outage == "bad_gateway":
            return 502, {"error": "bad_gateway"}
        if (method, path) != ("POST", "/token"):
            return 404, {"error": "not_found"}
        return self.exchange(form)

    def _refuse(self, code: str, description: str = "refused by the regcred test token endpoint") -> tuple[int, dict]:
        with self._lock:
            self.refused.append(code)
        return 400, {"error": code, "error_description": description}


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _split_jwt(assertion: str) -> tuple[bytes, dict, dict, bytes]:
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWS compact serialization")
    header, claims = (json.loads(_b64url(part)) for part in parts[:2])
    return f"{parts[0]}.{parts[1]}".encode(), header, claims, _b64url(parts[2])


@pytest.fixture(scope="session")
def google_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoogleTokenServer]:
    server = GoogleTokenServer().start(tmp_path_factory.mktemp("google-token"))
    yield server
    server.stop()


@pytest.fixture
def google(google_token_server: GoogleTokenServer, monkeypatch: pytest.MonkeyPatch, tmp_path) -> GoogleTokenServer:
    """The token server, reset, trusted by requests, and no ambient Google credentials."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(google_token_server.ca_bundle))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no gcloud ADC file
    google_token_server.reset()
    return google_token_server
