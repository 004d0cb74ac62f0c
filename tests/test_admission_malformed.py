"""Malformed admission calls get an HTTP 4xx with a one-line reason; never a 500, never a crash."""

from __future__ import annotations

import base64
import json
import logging

import jsonpatch
import pytest

from tests.conftest import FIXTURES
from tests.test_admission_golden import CREDENTIALS
from webhook.logs import FIELD_CHARS, JsonFormatter

REGISTRIES = (FIXTURES / "admission" / "_registries.yaml").read_text()
JSON = {"content-type": "application/json"}


def _review(**request_overrides) -> dict:
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "team-a",
        "object": {"spec": {"containers": [{"name": "c", "image": "acme/app"}]}},
    }
    request.update(request_overrides)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _without(document: dict, *path: str) -> dict:
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


MALFORMED = [
    pytest.param(b"not json", JSON, 400, "not valid JSON", id="not-json"),
    pytest.param(b'{"apiVersion": "admission.k8s.io/v1"', JSON, 400, "not valid JSON", id="truncated"),
    pytest.param(b"", JSON, 400, "not valid JSON", id="empty-body"),
    pytest.param(b"[]", JSON, 400, "JSON object", id="array"),
    pytest.param(b'"AdmissionReview"', JSON, 400, "JSON object", id="string"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, JSON, 400, "", id="deep-nesting"),
    pytest.param(json.dumps(_review(object={"spec": {"x": "@"}})).encode()
                 .replace(b'"@"', b"[" * 100_000 + b"]" * 100_000),
                 JSON, 400, "too deep", id="deep-nesting-in-a-field-never-read"),
    pytest.param(json.dumps(_review()).encode(), {"content-type": "text/plain"}, 415, "Content-Type", id="text-plain"),
    pytest.param(json.dumps(_review()).encode(), {}, 415, "Content-Type", id="no-content-type"),
    pytest.param(json.dumps({**_review(), "kind": "Pod"}).encode(), JSON, 400, "kind", id="wrong-kind"),
    pytest.param(json.dumps({**_review(), "apiVersion": "admission.k8s.io/v2"}).encode(), JSON, 400, "apiVersion",
                 id="wrong-api-version"),
    pytest.param(json.dumps(_without(_review(), "request")).encode(), JSON, 400, "request", id="no-request"),
    pytest.param(json.dumps(_without(_review(), "request", "uid")).encode(), JSON, 400, "uid", id="no-uid"),
    pytest.param(json.dumps(_review(uid="")).encode(), JSON, 400, "uid", id="empty-uid"),
    pytest.param(json.dumps(_review(uid=42)).encode(), JSON, 400, "uid", id="numeric-uid"),
    pytest.param(json.dumps(_review(object=["pod"])).encode(), JSON, 400, "object", id="object-is-a-list"),
    pytest.param(json.dumps(_review(kind="Pod")).encode(), JSON, 400, "kind", id="kind-is-a-string"),
    pytest.param(json.dumps(_review(dryRun="yes")).encode(), JSON, 400, "dryRun", id="dryrun-not-bool"),
    pytest.param(b'{"a": "' + b"x" * (3 * 1024 * 1024) + b'"}', JSON, 413, "larger than", id="over-3-mib"),
    # The namespace a review claims is checked before any work (issue: 3 MiB namespaces).
    pytest.param(json.dumps(_review(namespace="n" * 64)).encode(), JSON, 400, "namespace", id="namespace-64-chars"),
    pytest.param(json.dumps(_review(namespace="n" * (2 * 1024 * 1024))).encode(), JSON, 400, "namespace",
                 id="namespace-2-mib"),
    pytest.param(json.dumps(_review(namespace="Team-A")).encode(), JSON, 400, "namespace", id="namespace-uppercase"),
    pytest.param(json.dumps(_review(namespace="team_a")).encode(), JSON, 400, "namespace", id="namespace-underscore"),
    pytest.param(json.dumps(_review(namespace="-team")).encode(), JSON, 400, "namespace", id="namespace-leading-dash"),
    pytest.param(json.dumps(_review(namespace="team.a")).encode(), JSON, 400, "namespace", id="namespace-with-dot"),
    pytest.param(json.dumps(_without(_review(object={"metadata": {"namespace": "x" * 100_000}}),
                                     "request", "namespace")).encode(),
                 JSON, 400, "metadata.namespace", id="pod-namespace-100k"),
]


@pytest.mark.parametrize(("body", "headers", "status", "reason"), MALFORMED)
def test_malformed_calls_get_a_4xx_with_a_reason(make_client, body, headers, status, reason) -> None:
    client, deps = make_client(REGISTRIES, CREDENTIALS)
    answer = client.post("/mutate", content=body, headers=headers)
    assert answer.status_code == status
    assert reason in answer.text and answer.text.count("\n") == 1 and len(answer.text) < 300
    invalid = deps.metrics.registry.get_sample_value("regcred_admission_requests_total", {"result": "invalid"})
    assert invalid == 1


# Pods that are odd but well-formed AdmissionReviews: allowed, with a patch that applies.
ODD_PODS = [
    pytest.param({}, id="empty-object"),
    pytest.param({"spec": None}, id="null-spec"),
    pytest.param({"spec": {"containers": "acme/app"}}, id="containers-not-a-list"),
    pytest.param({"spec": {"containers": [None, 7, {"image": None}, {"image": ["acme/app"]}]}}, id="junk-containers"),
    pytest.param({"spec": {"containers": [{"image": "acme/app"}], "imagePullSecrets": "x"}}, id="pull-secrets-string"),
    pytest.param({"spec": {"containers": [{"image": "acme/" + "a" * 10_000}]}}, id="10k-image"),
    pytest.param({"spec": {"containers": [{"image": "acme/app\u0000"}]}}, id="nul-in-image"),
    pytest.param({"metadata": "x", "spec": {"containers": [{"image": "acme/app"}]}}, id="metadata-not-object"),
    pytest.param({"metadata": {"annotations": ["x"]}, "spec": {"containers": [{"image": "acme/app"}]}},
                 id="annotations-list"),
]


@pytest.mark.parametrize("namespace", [
    pytest.param("a" * 63, id="63-chars"),
    pytest.param("team-a1", id="dash-and-digit"),
    pytest.param("1team", id="leading-digit"),
])
def test_every_dns_label_namespace_is_accepted(make_client, namespace) -> None:
    client, _ = make_client(REGISTRIES, CREDENTIALS)
    answer = client.post("/mutate", json=_review(namespace=namespace))
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is True


def test_log_fields_carrying_request_data_are_truncated(make_client, caplog) -> None:
    client, _ = make_client(REGISTRIES, CREDENTIALS)
    image = "acme/" + "A" * 100_000  # not a valid reference: its warning and log line quote it
    with caplog.at_level(logging.INFO):
        client.post("/mutate", json=_review(object={"spec": {"containers": [{"image": image}] * 50}}))
        client.post("/mutate", content=b"{" + b"x" * 500_000, headers=JSON)
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines and max(len(line) for line in lines) < 4 * FIELD_CHARS


@pytest.mark.parametrize("pod", ODD_PODS)
def test_odd_pods_are_allowed(make_client, pod) -> None:
    client, _ = make_client(REGISTRIES, CREDENTIALS)
    answer = client.post("/mutate", json=_review(object=pod))
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is True and response["uid"] == "u-1"
    if "patch" in response:
        jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))


def test_an_internal_failure_still_allows_the_pod_with_a_warning(make_client) -> None:
    client, deps = make_client(REGISTRIES, CREDENTIALS)

    class Broken:
        def match(self, image):
            raise RuntimeError("boom")

    deps.config.matcher = Broken()
    answer = client.post("/mutate", json=_review())
    response = answer.json()["response"]
    assert answer.status_code == 200 and response["allowed"] is True and "patch" not in response
    assert response["warnings"] == ["regcred: internal error; pull secrets were not added"]


def test_a_lone_surrogate_is_refused_with_a_reason_not_a_crash(make_client) -> None:
    # "\udc00" is a legal JSON escape but not a character: no API server sends one (Go writes
    # valid UTF-8). It used to reach the "not granted" warning and break encoding the answer
    # (a 500); the parser now refuses it up front, as any malformed body.
    registries = ("registries:\n"
                  "  - {id: prod, url: prod.example.com, type: basic, secretRef: hub-acme, namespaces: [payments]}\n")
    client, _ = make_client(registries, CREDENTIALS)
    pod = {"spec": {"containers": [{"image": "prod.example.com/app"}]}}
    body = json.dumps(_review(namespace="x\udc00", object=pod))
    answer = client.post("/mutate", content=body.encode(), headers=JSON)
    assert answer.status_code == 400
    assert "not valid JSON" in answer.text and "surrogate" in answer.text
