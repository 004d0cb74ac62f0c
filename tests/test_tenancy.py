"""Tenancy: namespaces lists and namespaceSelector, their validation and the match explainer."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from tests.test_admission_golden import CREDENTIALS, StaticNamespaces, admit, review_for
from tests.test_registries import FIELD_PATH
from webhook.registries import parse_registries
from webhook.tenancy import NamespaceUnknown, namespace_allowed
from webhook.yamlload import ConfigError

TENANCY = FIXTURES / "admission" / "_tenancy.yaml"


def _entry(extra: str) -> str:
    return f"registries:\n  - id: r1\n    url: registry.example.com/r\n    type: basic\n    secretRef: s\n{extra}"


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param("    namespaces: []\n", "registries[0].namespaces: must not be empty", id="empty-list"),
    pytest.param("    namespaces: [Team_A]\n", "registries[0].namespaces: 'Team_A' is not a namespace", id="bad-name"),
    pytest.param("    namespaceSelector: {matchLabels: {'bad key!': x}}\n",
                 "registries[0].namespaceSelector.matchLabels: 'bad key!' is not a valid label key",
                 id="bad-label-key"),
    pytest.param("    namespaceSelector: {matchLabels: {env: 'not ok'}}\n",
                 "registries[0].namespaceSelector.matchLabels: 'not ok' is not a valid label value",
                 id="bad-label-value"),
    pytest.param("    namespaceSelector: {matchExpressions: [{key: env, operator: Has}]}\n",
                 "registries[0].namespaceSelector.matchExpressions[0].operator: must be one of", id="bad-operator"),
    pytest.param("    namespaceSelector: {matchExpressions: [{key: env, operator: In}]}\n",
                 "registries[0].namespaceSelector.matchExpressions[0].values: required for operator In",
                 id="in-needs-values"),
    pytest.param("    namespaceSelector: {matchExpressions: [{key: env, operator: Exists, values: [x]}]}\n",
                 "registries[0].namespaceSelector.matchExpressions[0].values: must be empty for operator Exists",
                 id="exists-takes-no-values"),
    pytest.param("    namespaceSelector: {matchLabel: {env: x}}\n",
                 "registries[0].namespaceSelector.matchLabel: unknown key", id="misspelt-key"),
])
def test_tenancy_fields_are_validated_with_entry_and_field(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_registries(_entry(extra))
    assert any(error.startswith(expected) for error in caught.value.errors), caught.value.errors
    assert all(FIELD_PATH.match(error) for error in caught.value.errors), caught.value.errors


_name = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_labels = st.dictionaries(st.sampled_from(["env", "tier", "team"]), st.sampled_from(["prod", "dev", "x"]), max_size=3)


@given(namespace=_name, labels=_labels)
def test_with_both_fields_a_namespace_must_satisfy_each(namespace: str, labels: dict[str, str]) -> None:
    registries = parse_registries(_entry(
        "    namespaces: ['team-*', payments]\n"
        "    namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}\n")).registries
    both = registries[0]
    by_list = both.model_copy(update={"namespace_selector": None})
    by_selector = both.model_copy(update={"namespaces": None})
    assert namespace_allowed(both, namespace, labels) == (
        namespace_allowed(by_list, namespace, labels) and namespace_allowed(by_selector, namespace, labels))
    assert namespace_allowed(by_selector, namespace, labels) == (labels.get("env") == "prod")
    assert namespace_allowed(by_list, namespace, labels) == (namespace.startswith("team-") or namespace == "payments")


def test_without_either_field_every_namespace_qualifies() -> None:
    open_registry = parse_registries(_entry("")).registries[0]
    assert all(namespace_allowed(open_registry, ns, labels) for ns, labels in [("a1", {}), ("kube-x", None)])


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["--namespace", "team-x", "--namespace-labels", "env=staging"], "yes", id="granted"),
    pytest.param(["--namespace", "team-x", "--namespace-labels", "env=dev"],
                 "no: the namespace labels do not match namespaceSelector", id="selector-refuses"),
    pytest.param(["--namespace", "other", "--namespace-labels", "env=prod"], "no: other is not in namespaces",
                 id="list-refuses"),
    pytest.param(["--namespace", "team-x"], "yes", id="no-labels-selector-not-evaluated"),
])
def test_match_explains_whether_a_namespace_is_granted(args: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "match", "--config", str(TENANCY), *args,
                             "registry.example.com/both/app"], capture_output=True, text=True)
    header, row = result.stdout.splitlines()
    assert header.split() == ["IMAGE", "NORMALIZED", "REGISTRY", "GRANTED"]
    assert row.split(None, 3)[2] == "both" and row.split(None, 3)[3].startswith(expected)


def test_refused_registries_are_counted_by_registry(make_client) -> None:
    client, deps = make_client(TENANCY.read_text(), CREDENTIALS, StaticNamespaces({"sandbox": {}}))
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "registry.example.com/prod/x"}]}}
    response = admit(client, review_for({"namespace": "sandbox"}, pod))
    assert "patch" not in response
    sample = deps.metrics.registry.get_sample_value("regcred_admission_denied_registry_total", {"registry": "prod"})
    assert sample == 1.0


class UnreadableNamespaces:
    """A cluster whose namespace is neither cached nor readable (the API server is down)."""

    async def labels(self, namespace: str) -> dict[str, str] | None:
        raise NamespaceUnknown(f"namespace {namespace}: HTTP 503")


def test_unknown_namespace_labels_refuse_only_selector_registries_and_say_why(make_client) -> None:
    client, deps = make_client(TENANCY.read_text(), CREDENTIALS, UnreadableNamespaces())
    images = ["registry.example.com/labelled/x", "registry.example.com/open/y"]
    pod = {"metadata": {"name": "p"},
           "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}}
    response = admit(client, review_for({"namespace": "fresh"}, pod))
    assert response["warnings"] == ["regcred: labels of namespace fresh unknown; registry labelled not granted"]
    assert "regcred-open" in base64.b64decode(response["patch"]).decode()
