"""The chart's ValidatingAdmissionPolicy, enforced by a real API server on regcred's ServiceAccount.

RBAC lets that account create any Secret anywhere (create cannot be narrowed by name). The
policy leaves it exactly regcred's own writes: labelled dockerconfigjson Secrets named
regcred-*, updates and deletes only of those. regcred's own writes passing is proven by the
whole e2e suite, which runs with the policy installed; one Pod here shows it directly.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.rest import ApiException

from tests.e2e.harness import OWN, SERVICE_ACCOUNT, b64, ensure_namespace, eventually, pod

MANAGED = {"app.kubernetes.io/managed-by": "regcred"}
DOCKERCONFIG = {".dockerconfigjson": b64('{"auths":{}}')}
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"


def secret(name: str, type_: str = DOCKERCONFIGJSON, labels: dict | None = None, data: dict | None = None,
           annotations: dict | None = None) -> dict:
    metadata = {"name": name, "labels": MANAGED if labels is None else labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "type": type_, "data": DOCKERCONFIG if data is None else data}


# The reproduction: a token Secret for a privileged ServiceAccount, named so regcred's by-name
# read would hand its token back. The token controller is not running here; the API server
# refusing the write is the point.
TOKEN_THEFT = secret("regcred-steal", "kubernetes.io/service-account-token", data={},
                     annotations={"kubernetes.io/service-account.name": "default"})


@pytest.fixture(scope="module")
def as_regcred(control_plane, installation, tmp_path_factory) -> k8s.CoreV1Api:
    path = control_plane.service_account_kubeconfig(tmp_path_factory.mktemp("sa") / "sa.kubeconfig",
                                                    OWN, SERVICE_ACCOUNT)
    core = k8s.CoreV1Api(config.new_client_from_config(str(path)))

    def enforced() -> bool:  # the API server loads a new policy from its watch within a second or so
        try:
            core.create_namespaced_secret("kube-system", TOKEN_THEFT, dry_run="All")
        except ApiException as exc:
            return exc.status == 403
        return False
    eventually(enforced, 20, "the secret-write policy enforced")
    return core


@pytest.fixture(scope="module")
def core(admin) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(admin)


def refused(write) -> str:
    with pytest.raises(ApiException) as error:
        write()
    assert error.value.status == 403, error.value.body
    assert "ValidatingAdmissionPolicy" in error.value.body
    return error.value.body


@pytest.mark.parametrize(("namespace", "body", "reason"), [
    pytest.param("kube-system", TOKEN_THEFT, "type kubernetes.io/dockerconfigjson", id="service-account-token"),
    pytest.param("default", secret("regcred-opaque", "Opaque", data={"k": b64("v")}),
                 "type kubernetes.io/dockerconfigjson", id="opaque"),
    pytest.param("default", secret("regcred-unlabelled", labels={}), "labelled", id="unlabelled-dockerconfigjson"),
    pytest.param("default", secret("regcred-other-owner", labels={"app.kubernetes.io/managed-by": "helm"}),
                 "labelled", id="managed-by-someone-else"),
    pytest.param("default", secret("not-regcreds"), "starts with regcred-", id="name-without-prefix"),
])
def test_regcreds_account_cannot_create_what_regcred_never_writes(as_regcred, core, namespace, body, reason):
    assert reason in refused(lambda: as_regcred.create_namespaced_secret(namespace, body))
    # Refused for real, not only reported: nothing was stored (read as admin: regcred's account
    # may read only its own Secrets by name).
    with pytest.raises(ApiException) as absent:
        core.read_namespaced_secret(body["metadata"]["name"], namespace)
    assert absent.value.status == 404


def test_regcreds_account_cannot_take_over_or_delete_a_foreign_secret(as_regcred, core):
    namespace = f"foreign-{time.monotonic_ns() % 10**9}"
    ensure_namespace(core.api_client, namespace)
    # Named like one of regcred's own pull Secrets, so RBAC lets the update and delete through
    # and the policy is what refuses them.
    core.create_namespaced_secret(namespace, secret("regcred-private", labels={}))
    taken = secret("regcred-private")
    assert "labelled" in refused(lambda: as_regcred.replace_namespaced_secret("regcred-private", namespace, taken))
    assert "labelled" in refused(lambda: as_regcred.delete_namespaced_secret("regcred-private", namespace))
    stored = core.read_namespaced_secret("regcred-private", namespace)
    assert not (stored.metadata.labels or {})


def test_regcreds_account_may_create_update_and_delete_its_own_kind_of_secret(as_regcred, core):
    namespace = f"own-kind-{time.monotonic_ns() % 10**9}"
    ensure_namespace(core.api_client, namespace)
    created = as_regcred.create_namespaced_secret(namespace, secret("regcred-private"))
    created.data = {".dockerconfigjson": b64('{"auths":{"r.example":{}}}')}
    as_regcred.replace_namespaced_secret("regcred-private", namespace, created)
    as_regcred.delete_namespaced_secret("regcred-private", namespace)


def test_others_are_not_judged(as_regcred, core):
    """The policy matches regcred's account only: an admin's Opaque Secret is stored."""
    core.create_namespaced_secret("default", secret("regcred-admins-opaque", "Opaque", labels={}, data={}))
    core.delete_namespaced_secret("regcred-admins-opaque", "default")


def test_regcred_itself_still_writes_its_pull_secrets(as_regcred, core, regcred, registry):
    namespace = f"policy-{time.monotonic_ns() % 10**9}"
    ensure_namespace(core.api_client, namespace)
    stored = core.create_namespaced_pod(namespace, pod("app", registry.image("team-a/app")))
    assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private"]
    assert core.read_namespaced_secret("regcred-private", namespace).type == DOCKERCONFIGJSON
