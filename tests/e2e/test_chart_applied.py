"""The Helm chart's objects, accepted by a real API server, and its RBAC enforced on regcred.

The session's installation applied the chart in tls.mode ``provided``; ``managed`` (the default)
and ``selfSigned`` are applied here with ``dryRun=All``, which runs every validation and admission step without storing.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.e2e.harness import (
    OWN,
    SERVICE_ACCOUNT,
    apply,
    ensure_namespace,
    eventually,
    pod,
    point_webhook_at,
    webhook_url,
)
from tests.support import helmchart


def test_every_object_of_the_provided_install_is_stored(admin, installation):
    dynamic = DynamicClient(admin)
    for obj in installation["rendered"].objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        stored = resource.get(name=obj["metadata"]["name"],
                              **({"namespace": OWN} if resource.namespaced else {}))
        assert stored.metadata.name == obj["metadata"]["name"], obj["kind"]
    (hook,) = dynamic.resources.get(api_version="admissionregistration.k8s.io/v1",
                                    kind="MutatingWebhookConfiguration").get(name="regcred").webhooks
    assert hook.clientConfig.url == webhook_url(installation["port"])
    assert (hook.sideEffects, hook.failurePolicy, hook.reinvocationPolicy) == ("NoneOnDryRun", "Ignore", "IfNeeded")


@pytest.mark.parametrize("values", [
    pytest.param({}, id="managed-default"),
    pytest.param({"tls": {"mode": "selfSigned"}}, id="selfSigned"),
    pytest.param({"tls": {"mode": "selfSigned"}, "ci": {"enabled": True}, "registries": [
        {"id": "hub", "url": "docker.io/acme", "type": "basic", "secretRef": "hub", "exposeToCI": True}]},
        id="selfSigned-with-ci-api"),
])
def test_the_api_server_accepts_every_object_of_a_render(admin, installation, values):
    rendered = helmchart.render(values, namespace=OWN, name="regcred")
    point_webhook_at(rendered.objects, webhook_url(installation["port"]), installation["serving"].ca_bundle)
    answers = apply(admin, rendered.objects, dry_run=True)
    assert [(a["kind"], a["metadata"]["name"]) for a in answers] == \
        [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]


def service_account_api(control_plane, tmp_path) -> k8s.ApiClient:
    from kubernetes import config
    path = control_plane.service_account_kubeconfig(tmp_path / "sa.kubeconfig", OWN, SERVICE_ACCOUNT)
    return config.new_client_from_config(str(path))


@pytest.mark.parametrize(("verb", "resource", "namespace", "allowed"), [
    pytest.param("create", "secrets", "default", True, id="create-secrets-anywhere"),
    pytest.param("watch", "namespaces", None, True, id="watch-namespaces"),
    pytest.param("get", "namespaces", None, True, id="get-namespaces"),
    pytest.param("watch", "configmaps", OWN, True, id="watch-own-configmap"),
    pytest.param("create", "pods", "default", False, id="no-pods"),
    pytest.param("delete", "namespaces", None, False, id="no-namespace-deletes"),
    pytest.param("watch", "configmaps", "default", False, id="no-configmaps-elsewhere"),
    pytest.param("patch", "secrets", "default", False, id="no-secret-patches"),
])
def test_the_service_account_has_what_the_chart_grants(control_plane, installation, tmp_path,
                                                       verb, resource, namespace, allowed):
    """SelfSubjectAccessReview as regcred's ServiceAccount: the API server's own verdict."""
    api = service_account_api(control_plane, tmp_path)
    attributes = {"verb": verb, "resource": resource, "group": ""}
    if namespace:
        attributes["namespace"] = namespace
    if resource == "configmaps":
        attributes["name"] = "regcred-registries"
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": attributes}})
    assert review.status.allowed is allowed


def test_the_service_account_cannot_create_pods(control_plane, installation, tmp_path):
    api = service_account_api(control_plane, tmp_path)
    with pytest.raises(ApiException) as refused:
        k8s.CoreV1Api(api).create_namespaced_pod("default", {"metadata": {"name": "x"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}})
    assert refused.value.status == 403


def test_a_removed_rule_is_named_and_pods_are_still_admitted(admin, installation, regcred, registry):
    """Take the Secret rule out of the chart's ClusterRole: regcred names the missing permission
    (log line and metric), admits the Pod with a warning, and repairs the Secret once the rule is
    back."""
    (role,) = [obj for obj in installation["rendered"].objects if obj["kind"] == "ClusterRole"]
    narrowed = {**role, "rules": [rule for rule in role["rules"] if "secrets" not in rule["resources"]]}
    core = k8s.CoreV1Api(admin)
    ensure_namespace(admin, "rbac-gap")
    apply(admin, [narrowed])
    try:
        response = core.create_namespaced_pod("rbac-gap", pod("app", registry.image("team-a/app")),
                                              _preload_content=False)
        assert any("regcred-private" in warning for warning in response.headers.getlist("Warning"))
        stored = core.read_namespaced_pod("app", "rbac-gap")
        assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private"]
        assert regcred.metric("regcred_kube_forbidden_total", verb="create", resource="secrets") >= 1
        assert "RBAC refused regcred: create secrets in namespace rbac-gap" in regcred.log()
    finally:
        apply(admin, [role])
    eventually(lambda: core.read_namespaced_secret("regcred-private", "rbac-gap"), 30, "the repaired Secret")
