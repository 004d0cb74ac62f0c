"""Golden admission cases: one file per case under tests/fixtures/admission/.

Each case is posted as an AdmissionReview; the patch is compared as parsed JSON, applied to
the Pod with ``jsonpatch`` (it must apply: an API server rejects a Pod whose patch fails),
and the patched Pod is admitted again, which must yield no patch (reinvocation).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonpatch
import pytest
import yaml

from tests.conftest import FIXTURES

CASES = sorted(p for p in (FIXTURES / "admission").glob("*.yaml") if not p.name.startswith("_"))
CREDENTIALS = {
    "hub-acme": {"username": "acme-bot", "password": "hub-pass"},
    "harbor": {"username": "robot$ci", "password": "harbor-pass"},
    "local": {"username": "alice", "password": "local-pass"},
}


class StaticNamespaces:
    """NamespaceLabels of a cluster whose namespaces have fixed labels."""

    def __init__(self, labels: dict[str, dict[str, str]]):
        self._labels = labels

    async def labels(self, namespace: str) -> dict[str, str] | None:
        return self._labels.get(namespace, {})


def review_for(case: dict, pod: dict) -> dict:
    request = {
        "uid": "6b4c2a4e-0000-4000-8000-000000000001",
        "kind": case.get("kind", {"group": "", "version": "v1", "kind": "Pod"}),
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": case.get("operation", "CREATE"),
        "object": pod,
        "dryRun": case.get("dryRun", False),
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    }
    for key in ("namespace", "name", "subResource"):
        if case.get(key, "absent") not in ("absent", None):
            request[key] = case[key]
    if "name" not in case:
        request["name"] = (pod.get("metadata") or {}).get("name")
    return {"apiVersion": case.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview", "request": request}


def admit(client, review: dict) -> dict:
    answer = client.post("/mutate", json=review)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["apiVersion"], body["kind"]) == (review["apiVersion"], "AdmissionReview")
    assert body["response"]["uid"] == review["request"]["uid"] and body["response"]["allowed"] is True
    return body["response"]


def decoded_patch(response: dict) -> list[dict]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case(path: Path, make_client) -> None:
    case = yaml.safe_load(path.read_text())
    registries = (FIXTURES / "admission" / case.get("registries", "_registries.yaml")).read_text()
    namespaces = StaticNamespaces({case["namespace"]: case["namespaceLabels"]}) if "namespaceLabels" in case else None
    client, deps = make_client(registries, CREDENTIALS, namespaces)
    for secret in case.get("existing", []):
        deps.store.store.put(secret)
    expect = case["expect"]

    response = admit(client, review_for(case, case["pod"]))

    patch = decoded_patch(response)
    assert patch == expect["patch"]
    warnings = response.get("warnings", [])
    assert len(warnings) == len(expect.get("warnings", []))
    for got, fragment in zip(warnings, expect.get("warnings", []), strict=True):
        assert fragment in got and len(got) <= 120
    for reason, count in expect.get("warningReasons", {}).items():
        assert deps.metrics.registry.get_sample_value("regcred_admission_warnings_total", {"reason": reason}) == count
    namespace = expect.get("secrets_namespace", case.get("namespace"))
    present = sorted(s["metadata"]["name"] for s in deps.store.store.list() if s["metadata"]["namespace"] == namespace)
    assert present == sorted(expect["secrets"])

    patched = jsonpatch.apply_patch(case["pod"], patch)
    assert decoded_patch(admit(client, review_for(case, patched))) == []


def test_secret_written_for_a_golden_case_holds_the_credentials(make_client) -> None:
    registries = (FIXTURES / "admission" / "_registries.yaml").read_text()
    client, deps = make_client(registries, CREDENTIALS)
    case = yaml.safe_load((FIXTURES / "admission" / "pull-secrets-absent.yaml").read_text())
    admit(client, review_for(case, case["pod"]))
    secret = deps.store.store.get("team-a", "regcred-hub-acme")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "regcred",
                                            "regcred.io/registry": "hub-acme"}
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    entry = auths["docker.io/acme"]
    assert (entry["username"], entry["password"]) == ("acme-bot", "hub-pass")
    assert base64.b64decode(entry["auth"]).decode() == "acme-bot:hub-pass"
    assert "regcred.io/expires-at" not in secret["metadata"].get("annotations", {})
