"""The control plane misbehaving for real: kube-apiserver restarted on the same etcd, etcd
compacted under a watch, a namespace stuck Terminating (no kube-controller-manager runs here).
The fake API server keeps the faults a real one cannot make on demand (500s, 429s, latency)."""

from __future__ import annotations

import time

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.harness import RegcredProcess, ensure_namespace, eventually, pod
from tests.support.kube import pod_review
from tests.support.tcpproxy import TcpProxy

PRIVATE = "regcred-private"


@pytest.fixture(scope="module")
def core(admin):
    return k8s.CoreV1Api(admin)


def exists(core, namespace: str, name: str = PRIVATE) -> bool:
    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def create_pod(core, namespace: str, name: str, image: str) -> k8s.V1Pod:
    """Create a Pod, retrying while a restarted API server still refuses connections."""
    return eventually(lambda: core.create_namespaced_pod(namespace, pod(name, image)), 30, f"creating {name}")


def refs(stored: k8s.V1Pod) -> list[str]:
    return [ref.name for ref in stored.spec.image_pull_secrets or []]


def test_an_apiserver_restart_loses_nothing(admin, core, control_plane, regcred, registry):
    image = registry.image("team-a/app")
    ensure_namespace(admin, "restart-before")
    create_pod(core, "restart-before", "first", image)
    assert exists(core, "restart-before")
    control_plane.stop_apiserver()
    time.sleep(1.0)  # regcred's watches and the webhook calls all fail meanwhile
    control_plane.start_apiserver()
    ensure_namespace(admin, "restart-after")
    assert refs(create_pod(core, "restart-after", "fresh", image)) == [PRIVATE]
    assert exists(core, "restart-after")
    # The resumed watch must report a deletion made after the restart: the next Pod's
    # admission then writes the Secret again instead of trusting a stale cache.
    core.delete_namespaced_secret(PRIVATE, "restart-before")

    def next_pod_gets_its_secret() -> bool:
        assert refs(create_pod(core, "restart-before", f"again-{time.monotonic_ns()}", image)) == [PRIVATE]
        return exists(core, "restart-before")

    eventually(next_pod_gets_its_secret, 20, "the Secret written again")


def test_a_compacted_watch_relists(admin, core, control_plane, regcred, registry, tmp_path):
    """A watch that comes back after its history was compacted gets 410 Gone, and the cache relists.

    A second replica reaches the API server through a proxy. The proxy holds its connections
    silent while its Secret is deleted, kube-apiserver restarts (its watch cache then starts at
    the newest revision) and etcd is compacted; then the proxy cuts the connections. The watch
    resumes from its last resourceVersion, which is gone: 410, relist, and the next admission
    writes the Secret again instead of trusting the stale cache."""
    proxy = TcpProxy(("127.0.0.1", control_plane.api_port))
    replica = regcred.replica(tmp_path, "behind-proxy", api_server=f"https://{proxy.address}",
                              extra_args=("--no-leader-elect",))
    replica.start()
    try:
        ensure_namespace(admin, "compacted")
        admit(replica, "compacted", registry.image("team-a/app"))
        assert exists(core, "compacted")
        proxy.hold()
        core.delete_namespaced_secret(PRIVATE, "compacted")
        control_plane.stop_apiserver()
        control_plane.compact()
        control_plane.start_apiserver()
        proxy.release()
        eventually(lambda: "watch expired; relisting" in replica.log(), 30, "the 410 and the relist")

        def admission_writes_it_again() -> bool:
            admit(replica, "compacted", registry.image("team-a/app"))
            return exists(core, "compacted")

        eventually(admission_writes_it_again, 30, "the Secret written again")
    finally:
        replica.stop()
        proxy.close()


def admit(replica: RegcredProcess, namespace: str, image: str) -> dict:
    """Send ``replica`` the review the API server would send for a Pod of ``image``."""
    answer = httpx.post(f"{replica.base}/mutate", json=pod_review(namespace, image),
                        verify=replica.ssl_context(), timeout=10).json()["response"]
    assert answer["allowed"] is True
    return answer


def test_a_terminating_namespace_gets_an_answer_and_no_retry_storm(admin, core, control_plane, regcred, registry):
    """With no kube-controller-manager the namespace stays Terminating for good, and the API
    server refuses new objects in it. It refuses the Pod itself before calling any webhook
    (NamespaceLifecycle runs first), so regcred meets such a namespace only in a race: the
    review is sent here as the API server would have sent it a moment earlier."""
    ensure_namespace(admin, "terminating")
    core.delete_namespace("terminating")
    eventually(lambda: core.read_namespace("terminating").status.phase == "Terminating", 10, "Terminating")
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("terminating", pod("late", registry.image("team-a/app")))
    assert refused.value.status == 403
    before = len(regcred_requests(control_plane, "terminating"))
    answer = admit(regcred, "terminating", registry.image("team-a/app"))
    assert answer.get("warnings"), answer
    time.sleep(5.0)  # long enough for any repair loop to show itself
    attempts = regcred_requests(control_plane, "terminating")[before:]
    assert 1 <= len(attempts) <= 3, [(a["verb"], a["objectRef"]) for a in attempts]


def regcred_requests(control_plane, namespace: str) -> list[dict]:
    """Requests regcred's ServiceAccount made in ``namespace``, from the API server's audit log."""
    return [event for event in control_plane.audit_events()
            if event.get("user", {}).get("username") == "system:serviceaccount:regcred-system:regcred"
            and event.get("objectRef", {}).get("namespace") == namespace]
