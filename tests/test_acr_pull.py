"""End to end: the Secret regcred writes for ``type: acr`` pulls from a registry that logs
clients in the way ACR does.

regcred (the real AcrProvider) gets an Entra token from the stand-in, exchanges it, and writes
the refresh token into the pull Secret. skopeo then pulls with that Secret from Debian's
docker-registry in token-auth mode, whose token service accepts the all-zero user with a live
refresh token the exchange issued (tests/support/acr_registry.py). The auth entry is re-keyed
from ``contoso.azurecr.io/team-a`` to the local registry's address: nothing else changes.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from tests.conftest import DictMaterial, build_deps, require_tools
from tests.support.acr_registry import ACR_USER, start_acr_registry
from tests.support.entra import Azure, azure, azure_servers  # noqa: F401
from tests.support.registry import authfile_entry, skopeo_inspect, write_authfile
from tests.support.sensitive import observe_response, register
from tests.test_admission_golden import admit, review_for
from webhook.app import create_app
from webhook.credentialcache import CredentialCache
from webhook.providers.acr import AcrProvider
from webhook.settings import Settings

pytestmark = pytest.mark.system
LOGIN_SERVER = "contoso.azurecr.io"
ROOT = f"{LOGIN_SERVER}/team-a"


@pytest.fixture(scope="module")
def acr_registry(azure_servers: Azure, tmp_path_factory):
    require_tools("docker-registry", "skopeo", "htpasswd")
    registry, tokens = start_acr_registry(tmp_path_factory.mktemp("acr-registry"), azure_servers.ca,
                                          azure_servers.ca_bundle, azure_servers.acr, LOGIN_SERVER)
    try:
        registry.push("team-a/app")
        yield registry, tokens
    finally:
        registry.stop()
        tokens.stop()


def secret_from_admission(azure: Azure, tmp_path) -> dict:
    """Admit a Pod pulling from ACR with a service principal; return the auths regcred wrote."""
    app = azure.entra.service_principal()
    deps = build_deps(f"registries:\n  - {{id: acr-prod, url: {ROOT}, type: acr, secretRef: acr-sp}}\n")
    secrets = {"acr-sp": {"tenant_id": app.tenant, "client_id": app.client_id, "client_secret": app.secret}}
    deps.tokens = CredentialCache({"acr": AcrProvider()}, DictMaterial(secrets), deps.metrics)
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": f"{ROOT}/app:1"}]}}
    with TestClient(create_app(Settings(), deps)) as client:
        client.event_hooks = {"request": [], "response": [observe_response]}
        response = admit(client, review_for({"namespace": "team-a"}, pod))
    assert "warnings" not in response, response
    secret = deps.store.store.get("team-a", "regcred-acr-prod")
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]


def rekeyed(auths: dict, registry, tmp_path):
    [(key, entry)] = auths.items()
    assert key == ROOT
    return write_authfile(tmp_path / "auth.json", {f"{registry.host}/team-a": entry})


def test_skopeo_pulls_with_the_refresh_token_regcred_wrote(acr_registry, azure: Azure, tmp_path) -> None:
    registry, tokens = acr_registry
    auths = secret_from_admission(azure, tmp_path)
    [entry] = auths.values()
    assert entry["username"] == ACR_USER and entry["password"] == azure.acr.issued[0]["refresh_token"]
    result = skopeo_inspect(registry.image("team-a/app"), rekeyed(auths, registry, tmp_path), registry.cert_dir)
    assert result.returncode == 0, result.stderr
    assert (ACR_USER, [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]) in tokens.granted


def test_an_expired_refresh_token_is_refused(acr_registry, azure: Azure, tmp_path) -> None:
    registry, tokens = acr_registry
    azure.acr.refresh_life = -60  # the exchange hands out a token that is already dead
    auths = secret_from_admission(azure, tmp_path)
    before = tokens.refused
    result = skopeo_inspect(registry.image("team-a/app"), rekeyed(auths, registry, tmp_path), registry.cert_dir)
    assert result.returncode != 0 and tokens.refused > before
    assert "unauthorized" in result.stderr.lower() or "authentication required" in result.stderr.lower()


def test_a_forged_refresh_token_is_refused(acr_registry, azure: Azure, tmp_path) -> None:
    registry, tokens = acr_registry
    now = int(time.time())
    claims = {"jti": str(uuid.uuid4()), "aud": LOGIN_SERVER, "grant_type": "refresh_token",
              "iat": now, "exp": now + 3600}
    forged = jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    register(forged, "forged ACR refresh token")
    authfile = write_authfile(tmp_path / "auth.json", {f"{registry.host}/team-a": authfile_entry(ACR_USER, forged)})
    before = tokens.refused
    result = skopeo_inspect(registry.image("team-a/app"), authfile, registry.cert_dir)
    assert result.returncode != 0 and tokens.refused > before
