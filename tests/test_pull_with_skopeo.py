"""A Secret written by regcred lets a real pull client pull from a real private registry.

The registry is Debian's docker-registry (distribution 2.8) with htpasswd auth and TLS; the
pull client is skopeo (containers/image, what CRI-O and podman use), given the Secret's
``.dockerconfigjson`` as its auth file.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import require_tools
from tests.support.registry import PrivateRegistry, skopeo_inspect
from tests.test_admission_golden import admit, review_for

pytestmark = pytest.mark.system
USER, PASSWORD = "puller", "pull:secret-with-colon"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    require_tools("docker-registry", "skopeo", "htpasswd")
    with PrivateRegistry.start(tmp_path_factory.mktemp("registry"), USER, PASSWORD) as running:
        running.push("team-a/app")
        running.push("team-ab/app")
        yield running


def authfile_from_admission(make_client, tmp_path, url: str, password: str, image: str):
    """Admit a Pod using ``image`` against a one-entry list; return the Secret as an auth file."""
    registries = f"registries:\n  - {{id: private, url: '{url}', type: basic, secretRef: private}}\n"
    client, deps = make_client(registries, {"private": {"username": USER, "password": password}})
    case = {"namespace": "team-a"}
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": image}]}}
    admit(client, review_for(case, pod))
    secret = deps.store.store.get("team-a", "regcred-private")
    path = tmp_path / "config.json"
    path.write_bytes(base64.b64decode(secret["data"][".dockerconfigjson"]))
    return path


@pytest.mark.parametrize(("scope", "password", "pulled", "expect_ok"), [
    pytest.param("/team-a", PASSWORD, "team-a/app", True, id="path-scoped-key-pulls-its-path"),
    pytest.param("/team-a", PASSWORD, "team-ab/app", False, id="path-scoped-key-not-offered-to-sibling"),
    pytest.param("", PASSWORD, "team-ab/app", True, id="host-key-pulls-any-path"),
    pytest.param("", "wrong-password", "team-a/app", False, id="wrong-password-refused"),
])
def test_skopeo_pulls_with_the_secret(registry, make_client, tmp_path, scope, password, pulled, expect_ok) -> None:
    image = registry.image("team-a/app")
    authfile = authfile_from_admission(make_client, tmp_path, registry.host + scope, password, image)
    assert list(json.loads(authfile.read_text())["auths"]) == [registry.host + scope]
    result = skopeo_inspect(registry.image(pulled), authfile, registry.cert_dir)
    assert (result.returncode == 0) == expect_ok, result.stderr
    if not expect_ok:
        assert "unauthorized" in result.stderr.lower() or "authentication required" in result.stderr.lower()
