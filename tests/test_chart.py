"""The Helm chart as Helm renders it: lint, Kubernetes schemas, the webhook configuration, RBAC
and the registry list.

Rendered with Helm's own Go engine (helm-python-sdk), validated with kubernetes-validate
against the API schemas of the oldest and newest Kubernetes it ships. The workload and its
Services, the TLS modes and the values have their own modules (test_chart_deployment,
test_chart_tls, test_chart_values).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.helmchart import CHART, NAMESPACE, helm, render
from tests.support.imports import import_or_skip
from webhook.registries import parse_registries

kubernetes_validate = import_or_skip("kubernetes_validate")

# Custom resources: no schema ships offline; their wiring is asserted below and the rules
# go through promtool in test_alerts.
CUSTOM_KINDS = {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}
CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"tls": {"mode": "certManager"}}, id="certManager"),
    pytest.param({"tls": {"mode": "provided", "provided": {"secretName": "my-tls", "caBundle": "Q0E="}}},
                 id="provided"),
    pytest.param({"ci": {"enabled": True}}, id="ci"),
    pytest.param({"ci": {"enabled": True, "ingress": {"enabled": True, "className": "nginx",
                                                       "hosts": ["regcred.example.com"],
                                                       "tls": [{"secretName": "ci-tls",
                                                                "hosts": ["regcred.example.com"]}]}}},
                 id="ci-ingress"),
    pytest.param({"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                  "grafanaDashboard": {"enabled": True}}, id="observability"),
    pytest.param({"hostNetwork": True, "webhook": {"port": 10260}, "replicaCount": 3,
                  "priorityClassName": "system-cluster-critical",
                  "tolerations": [{"operator": "Exists"}], "podDisruptionBudget": {"enabled": False}},
                 id="hostNetwork"),
]
DEFAULT_KINDS = sorted([
    "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "MutatingWebhookConfiguration",
    "PodDisruptionBudget", "Role", "RoleBinding", "Service", "Service", "ServiceAccount",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
])
# Kinds newer than the oldest schemas checked: admissionregistration.k8s.io/v1 policies are
# GA since 1.30 (the chart turns them off for older clusters).
SINCE_1_30 = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


EVERYTHING = {
    "tls": {"mode": "certManager"}, "ci": {"enabled": True, "ingress": {"enabled": True, "hosts": ["ci.example.com"]}},
    "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True},
}


@pytest.mark.parametrize("values", [pytest.param(None, id="defaults"), pytest.param(EVERYTHING, id="everything")])
def test_lint_is_clean(values):
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is "info" (an icon is recommended); warnings and errors are 2 and 3.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


_validated: dict[tuple[str, str], str | None] = {}


def _validate(obj: dict, version: str) -> str | None:
    """kubernetes-validate's verdict (None: valid), once per distinct object: each call reads
    the whole schema set from disk, and most objects are the same in every case."""
    key = (version, json.dumps(obj, sort_keys=True))
    if key not in _validated:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            _validated[key] = None
        except kubernetes_validate.SchemaNotFoundError:
            _validated[key] = "no schema"
        except kubernetes_validate.ValidationError as exc:
            _validated[key] = f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return _validated[key]


@pytest.mark.parametrize("version", ["1.25.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("values", CASES)
def test_every_object_is_valid_kubernetes(values, version):
    unchecked = set()
    for obj in render(values).objects:
        verdict = _validate(obj, version)
        if verdict == "no schema":
            unchecked.add(obj["kind"])
        elif verdict is not None:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {verdict}")
    assert unchecked <= CUSTOM_KINDS | (SINCE_1_30 if version == "1.25.0" else set())


def test_installs_with_zero_values():
    rendered = render()
    assert rendered.kinds() == DEFAULT_KINDS
    assert {obj["metadata"].get("namespace", NAMESPACE) for obj in rendered.objects} == {NAMESPACE}
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "regcred"
        assert labels["app.kubernetes.io/instance"] == "regcred"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_a_release_named_otherwise_prefixes_every_name():
    rendered = render(name="platform")
    assert rendered.deployment["metadata"]["name"] == "platform-regcred"
    assert rendered.webhook["clientConfig"]["service"]["name"] == "platform-regcred"


# ---- the webhook configuration ------------------------------------------------------------


def test_webhook_configuration_fields():
    webhook = render().webhook
    assert webhook["name"] == "pods.regcred.io"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "NoneOnDryRun"
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["pods"], "scope": "Namespaced"}]
    assert webhook["clientConfig"]["service"] == {"name": "regcred", "namespace": NAMESPACE,
                                                  "path": "/mutate", "port": 443}
    assert "objectSelector" not in webhook


def test_every_webhook_field_says_why():
    source = (CHART / "templates" / "mutatingwebhookconfiguration.yaml").read_text().splitlines()
    for field in ("admissionReviewVersions", "sideEffects", "failurePolicy", "reinvocationPolicy",
                  "timeoutSeconds", "matchPolicy", "rules", "namespaceSelector"):
        (index,) = [i for i, line in enumerate(source) if line.strip().startswith(f"{field}:")]
        assert source[index - 1].strip().startswith("#"), f"{field} has no comment saying why"


@pytest.mark.parametrize(("values", "namespace", "excluded"), [
    pytest.param({}, NAMESPACE, [NAMESPACE, "kube-system", "kube-public", "kube-node-lease"], id="defaults"),
    pytest.param({"excludeNamespaces": []}, "platform", ["platform", "kube-system"], id="kube-system-always"),
    pytest.param({"excludeNamespaces": ["kube-system", "monitoring"]}, "regcred",
                 ["regcred", "kube-system", "monitoring"], id="no-duplicates"),
])
def test_namespace_selector_leaves_out_own_system_and_opted_out_namespaces(values, namespace, excluded):
    rendered = render(values, namespace=namespace)
    assert rendered.webhook["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded},
        {"key": "regcred.io/inject", "operator": "NotIn", "values": ["disabled"]},
    ]}
    # The server skips the same namespaces (its own it adds itself).
    assert f"--exclude-namespaces={','.join(n for n in excluded if n != namespace)}" in rendered.args


def test_failure_policy_and_timeout_are_configurable():
    webhook = render({"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10}}).webhook
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Fail", 10)


# ---- RBAC ---------------------------------------------------------------------------------


def _rules(role: dict) -> set[tuple]:
    return {(group, resource, verb, tuple(rule.get("resourceNames", ())))
            for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_is_scoped_as_narrowly_as_each_object_allows():
    """Which verbs are needed is derived from what the code does (tests/test_rbac.py); this is
    where they apply: cluster-wide only for what lives in every namespace, in regcred's own
    namespace by name for the rest."""
    rendered = render()
    cluster_wide = {(group, resource) for group, resource, _, _ in _rules(rendered.get("ClusterRole"))}
    assert cluster_wide == {("", "secrets"), ("", "namespaces"),
                            ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")}
    # Without registries no pull Secret is named: only create (which RBAC cannot narrow) is left.
    assert {names for _, _, _, names in _rules(rendered.get("ClusterRole"))} == {(), ("regcred",)}
    own = {(resource, verb, names) for _, resource, verb, names in _rules(rendered.get("Role"))}
    # create cannot be narrowed by name (the object does not exist yet); everything else is.
    # Events go only to regcred's own ConfigMap, so they are granted in its namespace alone.
    assert {(resource, verb) for resource, verb, names in own if not names} == {("leases", "create"),
                                                                               ("events", "create")}
    assert {names for _, _, names in own if names} == {("regcred-registries",), ("regcred",),
                                                        ("regcred-webhook-cert",)}
    assert rendered.get("Role")["metadata"]["namespace"] == NAMESPACE
    subject = {"kind": "ServiceAccount", "name": "regcred", "namespace": NAMESPACE}
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = rendered.get(kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "regcred"}
    assert rendered.deployment["spec"]["template"]["spec"]["serviceAccountName"] == "regcred"


def test_cluster_wide_secrets_rule_says_why():
    source = (CHART / "templates" / "clusterrole.yaml").read_text()
    comment = source[: source.index('resources: ["secrets"]')].rsplit("rules:", 1)[1]
    assert "cluster-wide" in comment


def test_the_configmap_rule_names_the_configmap_the_server_watches():
    rendered = render()
    (rule,) = [r for r in rendered.get("Role")["rules"] if r["resources"] == ["configmaps"]]
    assert f"--registries-configmap={rule['resourceNames'][0]}" in rendered.args
    assert rendered.find("ConfigMap", rule["resourceNames"][0]) is not None


# ---- the registry list ----------------------------------------------------------------------


def test_the_registry_list_renders_into_registries_yaml():
    example = yaml.safe_load((CHART.parent.parent / "examples" / "registries.yaml").read_text())
    rendered = render({"registries": example["registries"]})
    text = rendered.get("ConfigMap", "regcred-registries")["data"]["registries.yaml"]
    assert yaml.safe_load(text) == example
    # The server's own validator accepts it.
    assert [r.id for r in parse_registries(text).registries] == [r["id"] for r in example["registries"]]


def test_an_empty_registry_list_is_a_valid_one():
    text = render().get("ConfigMap", "regcred-registries")["data"]["registries.yaml"]
    assert yaml.safe_load(text) == {"registries": []}
    assert parse_registries(text).registries == []


def test_app_version_is_the_package_version():
    import tomllib

    project = tomllib.loads((CHART.parent.parent / "pyproject.toml").read_text())["project"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == project["version"]
