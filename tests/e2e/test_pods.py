"""Pods created through the real API server: the chart's webhook configuration calls regcred,
the stored Pod carries the pull Secrets, the Secrets hold what skopeo pulls with."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client as k8s

from tests.e2e.harness import OWN, dockerconfig, ensure_namespace, pod
from tests.support.registry import skopeo_inspect, write_authfile

PRIVATE, SIDECARS = "regcred-private", "regcred-sidecars"


@pytest.fixture(scope="module")
def core(admin):
    return k8s.CoreV1Api(admin)


def names(stored: k8s.V1Pod) -> list[str]:
    return [ref.name for ref in stored.spec.image_pull_secrets or []]


def fresh_namespace(admin, prefix: str) -> str:
    name = f"{prefix}-{time.monotonic_ns() % 10**9}"
    ensure_namespace(admin, name)
    return name


def test_a_created_pod_carries_the_secret_and_skopeo_pulls_with_it(admin, core, regcred, registry, tmp_path):
    namespace = fresh_namespace(admin, "pull")
    image = registry.image("team-a/app")
    stored = core.create_namespaced_pod(namespace, pod("app", image))
    assert names(stored) == [PRIVATE]
    assert names(core.read_namespaced_pod("app", namespace)) == [PRIVATE]
    secret = core.read_namespaced_secret(PRIVATE, namespace)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "regcred"
    authfile = write_authfile(tmp_path / "auth.json", dockerconfig(secret)["auths"])
    pulled = skopeo_inspect(image, authfile, registry.cert_dir)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["Name"] == image.rsplit(":", 1)[0]


@pytest.mark.parametrize(("manifest", "expected"), [
    pytest.param(lambda r: pod("init", "docker.io/library/busybox:1", init=(r.image("team-a/app"),)),
                 [PRIVATE], id="init-container"),
    pytest.param(lambda r: pod("gen-", r.image("team-a/app")), [PRIVATE], id="generateName"),
    pytest.param(lambda r: pod("listed", r.image("team-a/app"), imagePullSecrets=[{"name": "mine"}]),
                 ["mine", PRIVATE], id="already-lists-a-pull-secret"),
    pytest.param(lambda r: pod("empty-list", r.image("team-a/app"), imagePullSecrets=[]),
                 [PRIVATE], id="empty-imagePullSecrets"),
    pytest.param(lambda r: pod("two", r.image("team-a/app"), r.image("team-b/sidecar")),
                 [PRIVATE, SIDECARS], id="two-registries"),
    pytest.param(lambda r: pod("public", "docker.io/library/busybox:1"), [], id="no-private-image"),
])
def test_the_stored_pod_references_exactly_its_registries(admin, core, regcred, registry, manifest, expected):
    namespace = fresh_namespace(admin, "shape")
    stored = core.create_namespaced_pod(namespace, manifest(registry))
    assert names(stored) == expected
    for name in expected:
        if name.startswith("regcred-"):
            assert core.read_namespaced_secret(name, namespace).type == "kubernetes.io/dockerconfigjson"


def test_ephemeral_containers_are_not_sent_to_the_webhook(admin, core, regcred, registry):
    """What the API server actually sends: the chart's rule is CREATE of pods, and an ephemeral
    container is added through the pods/ephemeralcontainers subresource (an UPDATE), so regcred
    is not called. The Pod's existing references are all the ephemeral container gets."""
    namespace = fresh_namespace(admin, "ephemeral")
    core.create_namespaced_pod(namespace, pod("debug-me", registry.image("team-a/app")))
    calls = regcred.metric("regcred_admission_requests_total")
    patched = core.patch_namespaced_pod_ephemeralcontainers("debug-me", namespace, {"spec": {"ephemeralContainers": [
        {"name": "debugger", "image": registry.image("team-b/sidecar")}]}})
    assert [c.name for c in patched.spec.ephemeral_containers] == ["debugger"]
    assert names(patched) == [PRIVATE]
    assert regcred.metric("regcred_admission_requests_total") == calls


def test_dry_run_returns_the_patch_and_writes_nothing(admin, core, regcred, registry):
    namespace = fresh_namespace(admin, "dry")
    def writes() -> dict[str, float]:
        return {outcome: regcred.metric("regcred_pull_secret_writes_total", registry="private", outcome=outcome)
                for outcome in ("created", "updated", "dry_run")}
    before = writes()
    answered = core.create_namespaced_pod(namespace, pod("dry", registry.image("team-a/app")), dry_run="All")
    assert names(answered) == [PRIVATE]
    assert core.list_namespaced_pod(namespace).items == []
    time.sleep(1.0)  # a write would be sent before the answer; give a late one time to land
    assert core.list_namespaced_secret(namespace).items == []
    assert writes() == {**before, "dry_run": before["dry_run"] + 1}  # counted as a dry run, nothing written


def test_warnings_reach_the_client_as_warning_headers(admin, core, regcred):
    namespace = fresh_namespace(admin, "warn")
    response = core.create_namespaced_pod(namespace, pod("warned", "broken.registry.invalid/app:1"),
                                          _preload_content=False)
    warnings = response.headers.getlist("Warning")
    assert any("regcred" in warning and "broken" in warning for warning in warnings), warnings
    stored = core.read_namespaced_pod("warned", namespace)
    assert stored.status.phase == "Pending"  # admitted: regcred is never why a Pod is refused
    assert names(stored) == []


def test_regcred_own_namespace_is_never_sent(core, regcred, registry):
    calls = regcred.metric("regcred_admission_requests_total")
    core.create_namespaced_pod(OWN, pod("own", registry.image("team-a/app")))
    assert names(core.read_namespaced_pod("own", OWN)) == []
    assert regcred.metric("regcred_admission_requests_total") == calls
