"""The GCR / Artifact Registry provider against a local OAuth token endpoint.

The endpoint (tests/support/google_token.py) is the key's ``token_uri``; it verifies the
RS256 JWT assertion with the public half of a key pair generated here, so a wrong key, a
wrong scope or a skipped signature fails the way it would against Google.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime

import pytest

from tests.support.fake_tokens import Clock
from tests.support.google_token import (  # noqa: F401
    PULL_SCOPE,
    GoogleTokenServer,
    ServiceAccountKey,
    google,
    google_token_server,
    make_key,
)
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers import CredentialUnavailable
from webhook.providers.gcr import GcrProvider
from webhook.registries import Registry, parse_registries
from webhook.yamlload import ConfigError

URL = "europe-docker.pkg.dev/acme/images"


def gcr(mode: str | None = None, *, secret_ref: str | None = "gcp-key", token_uri: str | None = None) -> Registry:
    """The entry; ``token_uri``: a local token endpoint, allowed as a private one."""
    fields: dict = {"id": "gar", "url": URL, "type": "gcr"}
    if secret_ref:
        fields["secretRef"] = secret_ref
    options = {"mode": mode} if mode else {}
    if token_uri:
        options["allowedTokenUris"] = [token_uri]
    if options:
        fields["gcr"] = options
    return Registry.model_validate(fields)


def material(key: ServiceAccountKey) -> dict[str, bytes]:
    return {"key.json": key.text.encode() + b"\n"}


# --- hosts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("gcr.io/acme", id="gcr"),
        pytest.param("eu.gcr.io/acme", id="regional-gcr"),
        pytest.param("us-docker.pkg.dev/acme/images", id="artifact-registry"),
        pytest.param("europe-west1-docker.pkg.dev/acme/images", id="regional-artifact-registry"),
    ],
)
def test_google_hosts_are_accepted(url: str) -> None:
    assert parse_registries(f"registries:\n  - id: gar\n    url: {url}\n    type: gcr\n").registries[0].url == url


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("docker.io/acme", id="docker-hub"),
        pytest.param("gcr.io.evil.com/acme", id="gcr-lookalike"),
        pytest.param("pkg.dev/acme", id="bare-pkg-dev"),
        pytest.param("evil.com/gcr.io/acme", id="gcr-in-path"),
        pytest.param("a.b.gcr.io/acme", id="nested-subdomain"),
    ],
)
def test_other_hosts_are_config_errors_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_registries(f"registries:\n  - id: gar\n    url: {url}\n    type: gcr\n")
    assert raised.value.errors == ["registries[0].url: type gcr needs a gcr.io, *.gcr.io or *.pkg.dev host"]


# --- access tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("expires_in", [pytest.param(3599, id="one-hour"), pytest.param(600, id="ten-minutes")])
def test_service_account_key_is_traded_for_an_access_token(google: GoogleTokenServer, expires_in: int) -> None:
    google.expires_in = expires_in
    key = google.new_key()
    before = datetime.now(UTC)
    credential = GcrProvider().mint(gcr(token_uri=google.token_uri), material(key))
    [issued] = google.issued
    assert (credential.username, credential.password) == ("oauth2accesstoken", issued["access_token"])
    assert credential.expires_at.tzinfo is UTC
    assert expires_in - 60 < (credential.expires_at - before).total_seconds() <= expires_in + 60
    assert (issued["iss"], issued["scope"]) == (key.info["client_email"], PULL_SCOPE)


def test_explicit_access_token_mode(google: GoogleTokenServer) -> None:
    credential = GcrProvider().mint(gcr("accessToken", token_uri=google.token_uri), material(google.new_key()))
    assert credential.username == "oauth2accesstoken" and len(google.issued) == 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda google: make_key(google.token_uri), id="unknown-key"),
        pytest.param(lambda google: _impostor(google), id="wrong-private-key"),
    ],
)
def test_keys_google_would_refuse_are_unavailable(google: GoogleTokenServer, forge) -> None:
    key = forge(google)
    with pytest.raises(CredentialUnavailable) as raised:
        GcrProvider().mint(gcr(token_uri=google.token_uri), material(key))
    assert str(raised.value) == "gar: Google token request failed: invalid_grant"
    assert google.refused == ["invalid_grant"] and google.issued == []
    assert key.private_key_pem.splitlines()[1] not in str(raised.value)


def _impostor(google: GoogleTokenServer) -> ServiceAccountKey:
    """A key claiming a known key's id and email, signed with another private key."""
    real, other = google.new_key(), make_key(google.token_uri)
    info = {**other.info, "private_key_id": real.info["private_key_id"], "client_email": real.info["client_email"]}
    return ServiceAccountKey(info, other.public_key)


def test_token_uri_unreachable(google: GoogleTokenServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    key = make_key(f"https://127.0.0.1:{closed}/token")
    with pytest.raises(CredentialUnavailable, match="^gar: Google auth failed: TransportError$"):
        GcrProvider().mint(gcr(token_uri=key.info["token_uri"]), material(key))


# --- where the signed assertion may go ----------------------------------------------------


@pytest.mark.parametrize("token_uri", [
    pytest.param(None, id="an-unlisted-https-endpoint"),  # the local server, not allowed
    pytest.param("http://oauth2.googleapis.com/token", id="google-over-http"),
    pytest.param("https://oauth2.googleapis.com.evil.example/token", id="google-lookalike-host"),
    pytest.param("https://oauth2.googleapis.com/token?next=https://evil.example", id="google-with-a-query"),
])
def test_a_key_naming_another_token_endpoint_is_refused_before_anything_is_sent(google, token_uri) -> None:
    """The review's reproduction: the key's token_uri pointed at an endpoint of the writer's
    choosing, which received the signed assertion and chose the distributed credential."""
    key = google.new_key()
    text = key.text if token_uri is None else _edit(key.text, token_uri=token_uri).decode()
    with pytest.raises(CredentialUnavailable) as raised:
        GcrProvider().mint(gcr(), {"key.json": text.encode()})
    assert str(raised.value) == ("gar: credentials Secret 'gcp-key' key key.json names a token_uri that is not "
                                 "Google's token endpoint (list a private one in gcr.allowedTokenUris)")
    assert google.issued == [] and google.refused == []  # the endpoint never heard of it


@pytest.mark.parametrize("uri", [
    pytest.param("http://tokens.internal.example/token", id="http"),
    pytest.param("https://user:pass@tokens.internal.example/token", id="credentials-in-url"),
    pytest.param("tokens.internal.example/token", id="no-scheme"),
])
def test_allowed_token_uris_must_be_plain_https_urls(uri: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_registries(f"registries:\n  - {{id: gar, url: {URL}, type: gcr, gcr: {{allowedTokenUris: ['{uri}']}}}}\n")
    (error,) = raised.value.errors
    assert error == ("registries[0].gcr.allowedTokenUris: entry 0 must be an https:// URL without credentials, "
                     "query or fragment")


@pytest.mark.parametrize(
    ("garble", "reason"),
    [
        pytest.param(lambda text: b"\xff\xfe" + text.encode("utf-16-le"), "is not JSON", id="not-utf8"),
        pytest.param(lambda text: text[:-40].encode(), "is not JSON", id="truncated"),
        pytest.param(lambda text: b"[]", "is not a service-account key", id="json-array"),
        pytest.param(lambda text: _edit(text, type="authorized_user"), "is not a service-account key",
                     id="user-credentials"),
        pytest.param(lambda text: _edit(text, private_key=None), "is not a service-account key", id="no-private-key"),
        pytest.param(lambda text: _edit(text, token_uri=None), "is not a service-account key", id="no-token-uri"),
        pytest.param(
            lambda text: _edit(text,
                               private_key="-----BEGIN PRIVATE KEY-----\nZ2FyYmxlZA==\n-----END PRIVATE KEY-----\n"),
            "is not a usable service-account key", id="garbled-pem",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["accessToken", "jsonKey"])
def test_garbled_key_json(google: GoogleTokenServer, garble, reason: str, mode: str) -> None:
    key = google.new_key()
    with pytest.raises(CredentialUnavailable) as raised:
        GcrProvider().mint(gcr(mode, token_uri=google.token_uri), {"key.json": garble(key.text)})
    assert str(raised.value).startswith(f"gar: credentials Secret 'gcp-key' key key.json {reason}")
    assert key.private_key_pem.splitlines()[1] not in str(raised.value)
    assert google.issued == []


def _edit(text: str, **changes) -> bytes:
    info = json.loads(text)
    for field, value in changes.items():
        if value is None:
            info.pop(field)
        else:
            info[field] = value
    return json.dumps(info).encode()


# --- Application Default Credentials -------------------------------------------------------


def test_no_secret_ref_uses_application_default_credentials(google: GoogleTokenServer, monkeypatch, tmp_path) -> None:
    key = google.new_key(email="workload@regcred-test.iam.gserviceaccount.com")
    path = tmp_path / "adc.json"
    path.write_text(key.text)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    credential = GcrProvider().mint(gcr(secret_ref=None), None)
    [issued] = google.issued
    assert credential.password == issued["access_token"]
    assert issued["iss"] == "workload@regcred-test.iam.gserviceaccount.com"


def test_broken_application_default_credentials(google: GoogleTokenServer, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(CredentialUnavailable, match="^gar: Google auth failed: DefaultCredentialsError$"):
        GcrProvider().mint(gcr(secret_ref=None), None)


# --- _json_key ------------------------------------------------------------------------------


def test_json_key_mode_hands_out_the_key_itself(google: GoogleTokenServer) -> None:
    key = google.new_key()
    credential = GcrProvider().mint(gcr("jsonKey"), material(key))
    assert (credential.username, credential.password, credential.expires_at) == ("_json_key", key.text, None)
    assert google.issued == []  # no token endpoint involved


def test_json_key_mode_needs_a_secret_ref(google: GoogleTokenServer) -> None:
    # Refused when the registry list is loaded, before any provider could be asked.
    with pytest.raises(ValueError, match="secretRef: required with gcr.mode jsonKey"):
        gcr("jsonKey", secret_ref=None)


# --- through the token cache ------------------------------------------------------------


def test_one_hour_token_is_refreshed_after_forty_minutes(google: GoogleTokenServer) -> None:
    key, clock = google.new_key(), Clock.starting_now()

    class Material:
        def read(self, name: str):
            return material(key)

    cache = CredentialCache({"gcr": GcrProvider()}, Material(), Metrics(), clock=clock)

    entry = gcr(token_uri=google.token_uri)

    async def scenario() -> list[str]:
        seen = [(await cache.get(entry)).password]
        clock.now += 39 * 60
        seen.append((await cache.get(entry)).password)
        clock.now += 2 * 60
        seen.append((await cache.get(entry)).password)  # still the old one; refresh in background
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))
        seen.append((await cache.get(entry)).password)
        return seen

    seen = asyncio.run(scenario())
    tokens = [issued["access_token"] for issued in google.issued]
    assert seen == [tokens[0], tokens[0], tokens[0], tokens[1]] and len(tokens) == 2
