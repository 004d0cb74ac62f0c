"""``regcred explain pod`` against the real API server: Pods regcred never saw, Pods in a
namespace that is not granted, and a Pod whose pull the registry refused.

There is no kubelet here, so the test writes the container's waiting state into the Pod's
status as a kubelet would after a failed pull.
"""

from __future__ import annotations

import json
import time

from kubernetes import client as k8s

from tests.e2e.diagnose_install import admin, install  # noqa: F401  (fixtures: a control plane per module)
from tests.e2e.harness import ensure_namespace, eventually, pod


def namespace(admin, prefix: str) -> str:
    name = f"{prefix}-{time.monotonic_ns() % 10**9}"
    ensure_namespace(admin, name)
    return name


def back_off(admin, name: str, namespace: str, image: str) -> None:
    """What the kubelet reports after failed pulls."""
    k8s.CoreV1Api(admin).patch_namespaced_pod_status(name, namespace, {"status": {"containerStatuses": [{
        "name": "c0", "image": image, "imageID": "", "ready": False, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}}]}})


def explain(install, name: str, namespace: str) -> tuple[str, dict]:
    text = install.explain(name, namespace)
    assert text.returncode == 0, text.stderr
    return text.stdout, json.loads(install.explain(name, namespace, "--output=json").stdout)


def test_a_pod_created_while_the_webhook_was_down(install, admin, registry):
    where = namespace(admin, "while-down")
    image = registry.image("check/app")
    install.process.kill()
    try:
        k8s.CoreV1Api(admin).create_namespaced_pod(where, pod("app", image))  # failurePolicy Ignore: admitted
    finally:
        install.process.start()
    back_off(admin, "app", where, image)
    text, answer = explain(install, "app", where)
    assert "verdict: the Pod does not reference regcred-chk-private" in text and "recreate it" in text
    [row] = answer["containers"]
    assert row["registry"] == "chk-private" and row["granted"] is True and row["referenced"] is False
    assert row["waiting"].startswith("ImagePullBackOff: Back-off pulling image")


def test_a_pod_in_a_namespace_not_granted(install, admin, registry):
    where = namespace(admin, "not-granted")
    k8s.CoreV1Api(admin).create_namespaced_pod(where, pod("app", registry.image("check-tenant/app")))
    text, answer = explain(install, "app", where)
    assert f"verdict: the namespace {where} is not granted registry chk-tenant" in text
    assert "namespaces: ['granted-*']" in text
    assert answer["containers"][0]["granted"] is False and answer["containers"][0]["secret"] == "missing"


def test_a_fresh_referenced_secret_and_a_refused_pull_points_at_the_credentials(install, admin, registry):
    where = namespace(admin, "granted")
    image = registry.image("check-tenant/app")
    stored = k8s.CoreV1Api(admin).create_namespaced_pod(where, pod("app", image))
    assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-chk-tenant"]
    eventually(lambda: k8s.CoreV1Api(admin).read_namespaced_secret("regcred-chk-tenant", where), what="Secret")
    back_off(admin, "app", where, image)
    text, answer = explain(install, "app", where)
    assert "verdict: the Secret is fresh and referenced: the registry refused these credentials" in text
    assert "check-creds" in answer["verdict"]
    assert answer["containers"][0]["secret"] == "fresh" and answer["containers"][0]["referenced"] is True


def test_a_missing_pod_exits_1(install):
    result = install.explain("no-such-pod", "default")
    assert result.returncode == 1 and "not found" in result.stderr
