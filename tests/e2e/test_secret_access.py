"""regcred reads no Secret it does not own: the chart's RBAC (rbac.secretAccess names) enforced
by a real API server on regcred's ServiceAccount, and a registry that RBAC does not cover."""

from __future__ import annotations

import time

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.harness import OWN, SERVICE_ACCOUNT, ensure_namespace, eventually, pod

CONFIGMAP = "regcred-registries"


@pytest.fixture(scope="module")
def as_regcred(control_plane, installation, tmp_path_factory):
    from kubernetes import config
    path = control_plane.service_account_kubeconfig(tmp_path_factory.mktemp("sa") / "sa.kubeconfig", OWN,
                                                    SERVICE_ACCOUNT)
    api = config.new_client_from_config(str(path))
    yield api
    api.close()


def allowed(api, **attributes) -> bool:
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"group": "", "resource": "secrets", **attributes}}})
    return review.status.allowed


def test_another_namespaces_secret_and_a_list_of_all_secrets_are_refused(admin, as_regcred):
    ensure_namespace(admin, "bank")
    k8s.CoreV1Api(admin).create_namespaced_secret("bank", {"metadata": {"name": "db-password"},
                                                           "stringData": {"password": "not-for-regcred"}})
    core = k8s.CoreV1Api(as_regcred)
    for call in (lambda: core.read_namespaced_secret("db-password", "bank"),
                 lambda: core.list_secret_for_all_namespaces(),
                 lambda: core.list_namespaced_secret(OWN),
                 lambda: core.list_secret_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=regcred")):
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403
    assert not allowed(as_regcred, verb="get", namespace="bank", name="db-password")
    assert not allowed(as_regcred, verb="list")
    assert not allowed(as_regcred, verb="watch")
    assert not allowed(as_regcred, verb="get", namespace=OWN, name="sh.helm.release.v1.regcred.v1")


@pytest.mark.parametrize(("verb", "namespace", "name", "expected"), [
    pytest.param("get", "bank", "regcred-private", True, id="get-own-pull-secret-anywhere"),
    pytest.param("list", None, "regcred-private", True, id="list-own-pull-secret-by-name"),
    pytest.param("watch", None, "regcred-gar", True, id="watch-own-pull-secret-by-name"),
    pytest.param("update", "bank", "regcred-private", True, id="update-own-pull-secret"),
    pytest.param("delete", "bank", "regcred-private", True, id="delete-own-pull-secret"),
    pytest.param("create", "bank", None, True, id="create-unrestricted"),
    pytest.param("patch", "bank", "regcred-private", False, id="never-patched"),
    pytest.param("watch", OWN, "private-creds", True, id="watch-credentials-secret"),
    pytest.param("get", OWN, "private-creds", False, id="credentials-only-through-the-watch"),
    pytest.param("update", OWN, "private-creds", False, id="credentials-never-written"),
    pytest.param("watch", "bank", "private-creds", False, id="credentials-name-elsewhere"),
    pytest.param("get", "bank", "regcred-unlisted", False, id="unlisted-registry"),
])
def test_self_subject_access_review_agrees(as_regcred, verb, namespace, name, expected):
    attributes = {"verb": verb, **({"namespace": namespace} if namespace else {}), **({"name": name} if name else {})}
    assert allowed(as_regcred, **attributes) is expected


def test_the_live_watches_name_their_secrets(control_plane, regcred):
    """Every Secret list or watch the API server let regcred's ServiceAccount make named its Secret."""
    served = [event for event in control_plane.audit_events()
              if (event.get("objectRef") or {}).get("resource") == "secrets"
              and event.get("verb") in ("list", "watch") and event["responseStatus"]["code"] < 400
              and event.get("user", {}).get("username", "").endswith(f":{SERVICE_ACCOUNT}")]
    assert served, "regcred listed no Secrets at all"
    assert {event["objectRef"].get("name") for event in served} >= {"regcred-private", "private-creds"}
    assert [event for event in served if not event["objectRef"].get("name")] == []


def test_a_registry_rbac_does_not_cover_is_reported_and_the_others_keep_working(admin, regcred, registry):
    core = k8s.CoreV1Api(admin)
    original = core.read_namespaced_config_map(CONFIGMAP, OWN)
    registries = yaml.safe_load(original.data["registries.yaml"])
    registries["registries"].append({"id": "outside-helm", "url": "outside.registry.invalid", "type": "basic",
                                     "secretRef": "private-creds"})
    core.patch_namespaced_config_map(CONFIGMAP, OWN, {"data": {"registries.yaml": yaml.safe_dump(registries)}})
    try:
        def reported() -> list:
            events = core.list_namespaced_event(OWN, field_selector=f"involvedObject.name={CONFIGMAP}").items
            return [e for e in events if e.reason == "SecretNotCoveredByRBAC" and "outside-helm" in e.message]
        (event,) = eventually(reported, 30, "the Event on the ConfigMap")
        assert "regcred-outside-helm" in event.message and "list secrets" in event.message
        assert "RBAC does not cover regcred-outside-helm" in regcred.log()
        assert regcred.metric("regcred_kube_forbidden_total", verb="list", resource="secrets") >= 1
        namespace = f"uncovered-{time.monotonic_ns() % 10**9}"
        ensure_namespace(admin, namespace)
        stored = core.create_namespaced_pod(namespace, pod("app", registry.image("team-a/app")))
        assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private"]
        eventually(lambda: core.read_namespaced_secret("regcred-private", namespace), 10, "the covered Secret")
    finally:
        core.patch_namespaced_config_map(CONFIGMAP, OWN, {"data": original.data})
