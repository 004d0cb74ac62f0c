"""What regcred does between admissions, through the real API: tenancy revocation on a relabel,
refresh and conflict repair, leader election on a real Lease."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import GAR, GOOGLE_TOKEN_SECONDS, PASSWORD
from tests.e2e.harness import CREDENTIALS, OWN, b64, dockerconfig, ensure_namespace, eventually, pod

TENANT_LABEL = "regcred-e2e/tenant"


@pytest.fixture(scope="module")
def core(admin):
    return k8s.CoreV1Api(admin)


def secret_or_none(core, name: str, namespace: str) -> k8s.V1Secret | None:
    try:
        return core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def password_in(secret: k8s.V1Secret) -> str:
    (entry,) = dockerconfig(secret)["auths"].values()
    return entry["password"]


def test_a_relabel_revokes_the_secret(admin, core, regcred, registry):
    namespace = "tenant-relabel"
    ensure_namespace(admin, namespace, {TENANT_LABEL: "yes"})
    stored = core.create_namespaced_pod(namespace, pod("app", registry.image("tenant/app")))
    assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-tenant"]
    assert secret_or_none(core, "regcred-tenant", namespace) is not None
    core.patch_namespace(namespace, {"metadata": {"labels": {TENANT_LABEL: None}}})
    eventually(lambda: secret_or_none(core, "regcred-tenant", namespace) is None, 20, "revocation")
    assert regcred.metric("regcred_refresh_secret_writes_total", operation="revoked") >= 1


def test_a_namespace_outside_the_selector_gets_a_warning_and_no_secret(admin, core, regcred, registry):
    namespace = "tenant-refused"
    ensure_namespace(admin, namespace)
    response = core.create_namespaced_pod(namespace, pod("app", registry.image("tenant/app")),
                                          _preload_content=False)
    assert any("not granted" in warning for warning in response.headers.getlist("Warning"))
    assert secret_or_none(core, "regcred-tenant", namespace) is None


def set_credentials_password(core, password: str) -> None:
    core.patch_namespaced_secret(CREDENTIALS, OWN, {"data": {"password": b64(password)}})


def test_a_changed_credential_is_rewritten_despite_another_writer(admin, core, regcred, registry):
    """The refresher rewrites the pull Secret through the real API while another client keeps
    updating it: every write it loses to a 409 Conflict is retried from the new version."""
    namespace = "refresh-conflict"
    ensure_namespace(admin, namespace)
    core.create_namespaced_pod(namespace, pod("app", registry.image("team-a/app")))
    assert password_in(core.read_namespaced_secret("regcred-private", namespace)) == PASSWORD
    stop = threading.Event()

    def touch() -> None:  # the other writer: a label controller, say
        count = 0
        while not stop.is_set():
            count += 1
            try:
                core.patch_namespaced_secret("regcred-private", namespace,
                                             {"metadata": {"annotations": {"e2e/touched": str(count)}}})
            except ApiException:
                pass

    toucher = threading.Thread(target=touch, daemon=True)
    toucher.start()
    try:
        set_credentials_password(core, "rotated-" + PASSWORD)
        eventually(lambda: password_in(core.read_namespaced_secret("regcred-private", namespace))
                   == "rotated-" + PASSWORD, 30, "the rewrite")
    finally:
        stop.set()
        toucher.join(timeout=10)
        set_credentials_password(core, PASSWORD)
    eventually(lambda: password_in(core.read_namespaced_secret("regcred-private", namespace)) == PASSWORD,
               30, "the rewrite back")
    secret = core.read_namespaced_secret("regcred-private", namespace)
    assert secret.metadata.annotations.get("e2e/touched")  # the other writer's change survived


def lease_holder(admin) -> str | None:
    try:
        lease = k8s.CoordinationV1Api(admin).read_namespaced_lease("regcred", OWN)
    except ApiException:
        return None
    return lease.spec.holder_identity


def test_leadership_moves_when_the_leader_dies(admin, regcred, tmp_path):
    eventually(lambda: regcred.metric("regcred_leader") == 1, 30, "the first replica leading")
    first_holder = lease_holder(admin)
    second = regcred.replica(tmp_path, "replica-2").start()
    try:
        assert second.metric("regcred_leader") == 0
        regcred.kill()  # no release: the Lease must expire
        eventually(lambda: second.metric("regcred_leader") == 1, 40, "the second replica taking over")
        assert lease_holder(admin) not in (None, first_holder)
    finally:
        regcred.start(wait=False)
        second.stop()  # releases the Lease on the way out
    regcred.wait_ready()
    eventually(lambda: regcred.metric("regcred_leader") == 1, 30, "the restarted replica leading again")


def test_a_short_lived_token_is_rewritten_before_it_expires(admin, core, regcred, google):
    """An Artifact Registry token from the local Google endpoint lives 45 s; the refresher mints
    a new one after 2/3 of that and rewrites the Secret through the real API."""
    namespace = "short-lived"
    ensure_namespace(admin, namespace)
    stored = core.create_namespaced_pod(namespace, pod("app", f"{GAR}/app:1"))
    assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-gar"]
    first = core.read_namespaced_secret("regcred-gar", namespace)
    token = password_in(first)
    expires = first.metadata.annotations["regcred.io/expires-at"]
    rewritten = eventually(lambda: (lambda s: s if password_in(s) != token else None)(
        core.read_namespaced_secret("regcred-gar", namespace)), GOOGLE_TOKEN_SECONDS + 15, "the rewrite")
    assert rewritten.metadata.annotations["regcred.io/expires-at"] > expires
    assert rewritten.metadata.resource_version != first.metadata.resource_version
