"""The chart's values: the schema rejects mistakes, and every key is typed and documented
(values.yaml comment, values.schema.json description, chart README table)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.support.helmchart import CHART, chart, helm, render, values_file

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
README_EXAMPLE = {"id": "dockerhub-acme", "url": "docker.io/acme", "type": "basic", "secretRef": "dockerhub-acme",
                  "exposeToCI": False}


@pytest.mark.parametrize(("values", "error"), [
    pytest.param({"replicaCont": 3}, "replicaCont", id="misspelt-top-level-key"),
    pytest.param({"webhook": {"failurPolicy": "Fail"}}, "failurPolicy", id="misspelt-nested-key"),
    pytest.param({"webhook": {"failurePolicy": "Retry"}}, "failurePolicy", id="unknown-enum-value"),
    pytest.param({"tls": {"mode": "letsEncrypt"}}, "mode", id="unknown-tls-mode"),
    pytest.param({"replicaCount": "two"}, "replicaCount", id="wrong-type"),
    pytest.param({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds", id="timeout-over-30"),
    pytest.param({"registries": [{**README_EXAMPLE, "secretref": "x"}]}, "secretref", id="misspelt-registry-key"),
    pytest.param({"registries": [{"id": "harbor", "url": "harbor.example.com", "type": "basic"}]}, "secretRef",
                 id="basic-without-secretRef"),
    pytest.param({"registries": [{**README_EXAMPLE, "id": "Docker_Hub"}]}, "id", id="bad-registry-id"),
    pytest.param({"registries": [{**README_EXAMPLE, "type": "quay"}]}, "type", id="unknown-registry-type"),
    pytest.param({"registries": [{**README_EXAMPLE, "ecr": {"roleArn": "arn:aws:iam::123456789012:role/x"}}]}, "ecr",
                 id="ecr-options-on-basic"),
    pytest.param({"registries": [{**README_EXAMPLE, "acr": {}}]}, "acr", id="acr-options-on-basic"),
    pytest.param({"registries": [{"id": "acr", "url": "contoso.azurecr.io", "type": "acr",
                                  "acr": {"tenantId": "contoso"}}]},
                 "tenantId", id="acr-tenant-not-a-guid"),
    pytest.param({"image": {"digest": "latest"}}, "digest", id="digest-not-a-digest"),
])
def test_schema_rejects_mistakes(values, error):
    with pytest.raises(helm.HelmValuesError, match=re.escape(error)):
        render(values)


def test_schema_accepts_every_registry_type():
    render({"registries": [
        README_EXAMPLE,
        {"id": "ecr-prod", "url": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "type": "ecr",
         "ecr": {"roleArn": "arn:aws:iam::123456789012:role/regcred", "externalId": "x"}},
        {"id": "gar", "url": "europe-docker.pkg.dev/acme", "type": "gcr", "gcr": {"mode": "jsonKey"},
         "secretRef": "gar-key", "exposeToCI": True},
        {"id": "acr-prod", "url": "contoso.azurecr.io/team-a", "type": "acr", "secretRef": "acr-sp",
         "acr": {"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}},
    ]})


def test_the_readme_aks_workload_identity_values_render_as_documented():
    """The README's aks-values.yaml: the ServiceAccount names the identity, the Pods carry the
    label AKS's webhook looks for, and the registry list is valid."""
    from webhook.registries import parse_registries

    readme = (CHART.parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(# aks-values\.yaml.*?)```", readme, re.S)
    assert block, "README: the aks-values.yaml example is gone"
    rendered = render(yaml.safe_load(block.group(1)), namespace="regcred", name="regcred")
    # The README's federated credential trusts system:serviceaccount:regcred:regcred.
    assert rendered.get("ServiceAccount")["metadata"]["name"] == "regcred"
    annotations = rendered.get("ServiceAccount")["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f-]{36}", annotations["azure.workload.identity/client-id"])
    pod = rendered.deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == rendered.get("ServiceAccount")["metadata"]["name"]
    configmap = next(o for o in rendered.objects if o["kind"] == "ConfigMap" and "registries.yaml" in o.get("data", {}))
    [registry] = parse_registries(configmap["data"]["registries.yaml"]).registries
    assert (registry.type, registry.secret_ref) == ("acr", None)


def _keys(schema: dict, path: str = ""):
    """(path, schema) of the top level and of every key, list items included."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _keys(sub, f"{path}.{key}" if path else key)
    for key, sub in schema.get("items", {}).get("properties", {}).items():
        yield from _keys(sub, f"{path}[].{key}")


def test_schema_types_and_describes_every_key_and_allows_no_other():
    for path, schema in _keys(SCHEMA):
        if path:
            assert schema.get("description"), f"{path} has no description"
            assert "type" in schema, f"{path} has no type"
        for where in (schema, schema.get("items", {})):
            if "properties" in where:
                assert where.get("additionalProperties") is False, f"{path or 'top level'} allows unknown keys"


def test_helm_sees_the_schema():
    assert chart().schema == SCHEMA


def _key_lines(text: str):
    """(path, line index) of every mapping key in values.yaml, nested by indentation."""
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(text.splitlines()):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        yield [key for _, key in stack], index


def _schema_at(path: list[str]) -> dict | None:
    schema = SCHEMA
    for key in path:
        schema = schema.get("properties", {}).get(key)
        if schema is None:
            return None
    return schema


def test_values_yaml_comments_every_chart_key():
    lines = (CHART / "values.yaml").read_text().splitlines()
    for path, index in _key_lines("\n".join(lines)):
        parent = _schema_at(path[:-1])
        # Keys inside Kubernetes-typed values (resources, securityContext, ...) are Kubernetes'.
        if parent is None or "properties" not in parent:
            continue
        assert lines[index - 1].strip().startswith("#"), f"values.yaml: {'.'.join(path)} has no comment"


def _leaves(values: dict, schema: dict, path: str = ""):
    for key, value in values.items():
        sub = schema["properties"][key]
        full = f"{path}.{key}" if path else key
        if isinstance(value, dict) and value and "properties" in sub:
            yield from _leaves(value, sub, full)
        else:
            yield full, value


def test_chart_readme_documents_every_value_with_its_default():
    readme = (CHART / "README.md").read_text()
    table = dict(re.findall(r"^\| `([\w.]+)` \| [^|]+(?:\\\|[^|]+)* \| `(.*)` \| .+ \|$", readme, re.M))
    leaves = dict(_leaves(values_file(), SCHEMA))
    assert sorted(table) == sorted(leaves)
    for key, default in leaves.items():
        assert json.loads(table[key]) == default, f"README default of {key}"


def test_defaults_render_and_lookup_free_values_merge():
    merged = chart().merge_values({"replicaCount": 3})
    assert merged["replicaCount"] == 3
    assert merged["tls"]["mode"] == "managed"
    assert yaml.safe_load((CHART / "values.yaml").read_text()) == chart().values



def test_schema_accepts_tenancy_fields_and_the_rendered_list_validates():
    from webhook.registries import parse_registries

    tenancy = {**README_EXAMPLE, "namespaces": ["payments", "team-a-*"],
               "namespaceSelector": {"matchLabels": {"tier": "production"},
                                     "matchExpressions": [{"key": "sandbox", "operator": "DoesNotExist"}]}}
    rendered = render({"registries": [tenancy]})
    configmap = next(o for o in rendered.objects if o["kind"] == "ConfigMap" and "registries.yaml" in o.get("data", {}))
    registry = parse_registries(configmap["data"]["registries.yaml"]).registries[0]
    assert registry.namespaces == ["payments", "team-a-*"] and registry.namespace_selector is not None
    with pytest.raises(helm.HelmValuesError):
        render({"registries": [{**tenancy, "namespaceSelector": {"matchLabel": {"a": "b"}}}]})
