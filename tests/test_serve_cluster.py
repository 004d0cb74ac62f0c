"""``regcred serve`` in cluster mode, end to end: the real binary, the real kubernetes client,
the fake API server, a real registry and skopeo pulling with the Secret regcred wrote."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import require_tools
from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import pod_review
from tests.support.registry import PrivateRegistry, skopeo_inspect
from tests.test_serve import free_port

pytestmark = pytest.mark.system
USER, PASSWORD = "puller", "cluster-pass"
OWN = "regcred-system"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("condition not reached in time")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_tools("docker-registry", "skopeo", "htpasswd")
    workdir = tmp_path_factory.mktemp("cluster")
    with PrivateRegistry.start(workdir / "registry", USER, PASSWORD) as registry, FakeApiServer() as api:
        registry.push("team-a/app")
        api.add_namespace(OWN)
        api.add_namespace("team-a")
        api.put_object("configmaps", {"metadata": {"name": "regcred-registries", "namespace": OWN},
                                      "data": {"registries.yaml": registries_yaml(registry.host)}})
        api.put_object("secrets", {"metadata": {"name": "private-creds", "namespace": OWN},
                                   "data": {"username": b64(USER), "password": b64(PASSWORD)}})
        port, ci_port = free_port(), free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--kubeconfig", api.kubeconfig(str(workdir / "kubeconfig")),
             "--namespace", OWN, "--registries-configmap", "regcred-registries", "--refresh-interval", "0.5",
             "--dev-certs-dir", str(workdir / "certs"), "--host", "127.0.0.1", "--port", str(port),
             "--metrics-port", "0", "--ci-port", str(ci_port), "--ci-tokens-secret", "regcred-ci-tokens"],
            stdout=subprocess.DEVNULL, stderr=(workdir / "log").open("wb"),
        )
        base = f"https://localhost:{port}"
        eventually(lambda: (workdir / "certs" / "ca.crt").exists())
        context = ssl.create_default_context(cafile=str(workdir / "certs" / "ca.crt"))
        try:
            eventually(lambda: httpx.get(f"{base}/readyz", verify=context).status_code == 200)
        except BaseException:
            print((workdir / "log").read_text())
            raise
        yield {"api": api, "registry": registry, "base": base, "context": context, "workdir": workdir,
               "ci": f"https://localhost:{ci_port}"}
        process.terminate()
        process.wait(timeout=20)


def registries_yaml(host: str, path: str = "team-a") -> str:
    return (f"registries:\n  - {{id: private, url: '{host}/{path}', type: basic, secretRef: private-creds,"
            " exposeToCI: true}\n")


def admit(world, image: str, namespace: str = "team-a") -> dict:
    return httpx.post(f"{world['base']}/mutate", json=pod_review(namespace, image),
                      verify=world["context"]).json()["response"]


def test_cold_then_warm_admission_and_a_real_pull(world, tmp_path) -> None:
    api, registry = world["api"], world["registry"]
    response = admit(world, registry.image("team-a/app"))
    assert json.loads(base64.b64decode(response["patch"]))[0]["value"] == [{"name": "regcred-private"}]
    secret = api.get_object("secrets", "team-a", "regcred-private")
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "regcred"

    authfile = tmp_path / "auth.json"
    authfile.write_bytes(base64.b64decode(secret["data"][".dockerconfigjson"]))
    result = skopeo_inspect(registry.image("team-a/app"), authfile, registry.cert_dir)
    assert result.returncode == 0, result.stderr

    api.reset_log()
    for _ in range(5):
        assert "patch" in admit(world, registry.image("team-a/app"))
    assert api.count(resource="secrets", verb="create") + api.count(resource="secrets", verb="get") \
        + api.count(resource="secrets", verb="update") + api.count(resource="secrets", verb="patch") == 0


def test_configmap_changes_apply_and_broken_ones_keep_the_last_good_list(world) -> None:
    api, registry = world["api"], world["registry"]
    image = registry.image("team-a/app")

    def set_list(text: str) -> None:
        api.put_object("configmaps", {"metadata": {"name": "regcred-registries", "namespace": OWN},
                                      "data": {"registries.yaml": text}})

    set_list(registries_yaml(registry.host, "elsewhere"))
    eventually(lambda: "patch" not in admit(world, image))
    set_list("registries: [broken\n")
    eventually(lambda: any(e.get("reason") == "InvalidRegistryList" for e in api.objects("events", OWN)))
    assert "patch" not in admit(world, image)  # still the last good list
    set_list(registries_yaml(registry.host))
    eventually(lambda: "patch" in admit(world, image))


def test_rotated_credentials_reach_the_namespace(world) -> None:
    api = world["api"]
    admit(world, world["registry"].image("team-a/app"))
    api.put_object("secrets", {"metadata": {"name": "private-creds", "namespace": OWN},
                               "data": {"username": b64(USER), "password": b64("rotated-pass")}})

    def rotated() -> bool:
        secret = api.get_object("secrets", "team-a", "regcred-private")
        auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
        return next(iter(auths.values()))["password"] == "rotated-pass"

    eventually(rotated)


def test_an_api_outage_during_admission_still_allows_the_pod(world) -> None:
    api = world["api"]
    api.add_namespace("team-outage")
    api.fail_next(10, status=500, verb="create", resource="secrets")
    response = admit(world, world["registry"].image("team-a/app"), namespace="team-outage")
    assert response["allowed"] is True
    assert json.loads(base64.b64decode(response["patch"]))[0]["value"] == [{"name": "regcred-private"}]
    assert any("could not write regcred-private" in warning for warning in response["warnings"])
    api.clear_faults()
    eventually(lambda: api.get_object("secrets", "team-outage", "regcred-private"))  # the refresher repairs it


def test_ci_tokens_come_from_a_watched_secret(world) -> None:
    from webhook.ci.tokens import create_token, entry_yaml

    api = world["api"]
    token, entry = create_token("pipeline")
    url = f"{world['ci']}/registries/private/creds"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=headers, verify=world["context"]).status_code == 401
    tokens_yaml = "tokens:\n" + "".join("  " + line + "\n" for line in entry_yaml(entry).strip().splitlines())
    api.put_object("secrets", {"metadata": {"name": "regcred-ci-tokens", "namespace": OWN},
                               "data": {"tokens.yaml": b64(tokens_yaml)}})
    answer = eventually(
        lambda: (r := httpx.get(url, headers=headers, verify=world["context"])).status_code == 200 and r)
    assert answer.json()["username"] == USER
