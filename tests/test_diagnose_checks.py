"""The checks of ``regcred check`` as tables over data: no cluster needed."""

from __future__ import annotations

import io
import json

import pytest

from webhook.diagnose import report
from webhook.diagnose.checks import credentials, managed, rbac, registry_list, running
from webhook.diagnose.rbac import PERMISSIONS, Permission, needed
from webhook.diagnose.webhookcheck import Served, WebhookFacts, webhook_checks
from webhook.registries import parse_registries

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
REGISTRIES = parse_registries("""
registries:
  - {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}
  - {id: ecr, url: 123456789012.dkr.ecr.eu-west-1.amazonaws.com, type: ecr, secretRef: aws-keys}
  - {id: gcr, url: europe-docker.pkg.dev/p, type: gcr}
""").registries


@pytest.mark.parametrize(("text", "status", "fragment"), [
    pytest.param(None, "fail", "not found", id="missing"),
    pytest.param("registries: [{id: x}]", "fail", "registries[0].url: Field required",
                 id="invalid-same-as-check-config"),
    pytest.param("registries: []", "ok", "0 registries", id="empty"),
])
def test_registry_list(text, status, fragment):
    [result], _ = registry_list(text, "ns/cm")
    assert result.status == status and fragment in result.detail


@pytest.mark.parametrize(("secrets", "expected"), [
    pytest.param({"hub-creds": {"username": b"u", "password": b"p"},
                  "aws-keys": {"aws_access_key_id": b"A", "aws_secret_access_key": b"s"}},
                 ["ok", "ok", "ok"], id="all-present"),
    pytest.param({"aws-keys": {"aws_access_key_id": b"A"}},
                 ["fail:ns/hub-creds not found", "fail:ns/aws-keys lacks key(s) aws_secret_access_key", "ok"],
                 id="missing-secret-and-key"),
    pytest.param({"hub-creds": {"username": b"u", "password": b""}, "aws-keys": {}},
                 ["fail:ns/hub-creds lacks key(s) password",
                  "fail:ns/aws-keys lacks key(s) aws_access_key_id, aws_secret_access_key", "ok"],
                 id="empty-value-counts-as-missing"),
])
def test_credentials(secrets, expected):
    results = credentials(REGISTRIES, secrets, "ns")
    assert [r.status if r.status == "ok" else f"{r.status}:{r.detail}" for r in results] == expected


def test_rbac_names_each_missing_permission_with_its_resource_name():
    table = needed("regcred-registries")
    answers = [(p, not (p.resource == "configmaps" and p.verb == "watch")) for p in table]
    [result] = rbac(answers, "regcred-system", "regcred")
    assert result.status == "fail"
    assert result.name == ("system:serviceaccount:regcred-system:regcred may not watch configmaps named "
                           "regcred-registries in namespace regcred-system")


def test_the_permission_table_fills_in_the_configmap_name_only():
    filled = needed("x-registries")
    assert len(filled) == len(PERMISSIONS)
    assert {p.name for p in filled} == {None, "x-registries", "regcred"}
    assert Permission("create", "leases", "coordination.k8s.io", True).describe("ns") == \
        "create leases.coordination.k8s.io in namespace ns"


def status_of(**state) -> dict:
    base = {"type": "basic", "credentialsAvailable": True, "lastSuccess": "2027-01-15T08:00:00Z",
            "expiresAt": None, "lastError": None}
    return {"cachesSynced": True, "configGeneration": 3, "registries": {"hub": {**base, **state}}}


@pytest.mark.parametrize(("status", "expected"), [
    pytest.param(status_of(), "ok", id="healthy"),
    pytest.param(status_of(expiresAt="2027-01-15T08:09:00Z"), "fail:the token expires at", id="expires-in-9-min"),
    pytest.param(status_of(expiresAt="2027-01-15T08:11:00Z"), "ok", id="expires-in-11-min"),
    pytest.param(status_of(credentialsAvailable=False, lastError={"class": "ClientError", "time": "t"}),
                 "fail:unavailable (last error ClientError at t)", id="unavailable"),
    pytest.param({"cachesSynced": True, "registries": {}}, "fail:regcred does not have this registry", id="unknown"),
])
def test_running_registry_state(status, expected):
    result = running(REGISTRIES[:1], status, None, NOW, "ns")[-1]
    assert (result.status if result.status == "ok" else f"{result.status}:{result.detail}").startswith(expected)


def test_running_without_status_fails_with_the_reason():
    [result] = running(REGISTRIES, None, "cannot read /status: HTTP 503", NOW, "ns")
    assert result.status == "fail" and "503" in result.detail and "get pods" in result.hint


def secret(namespace: str, registry: str, expires: str | None = None) -> dict:
    return {"metadata": {"namespace": namespace, "labels": {"regcred.io/registry": registry},
                         "annotations": {"regcred.io/expires-at": expires} if expires else {}}}


def test_managed_counts_names_stale_namespaces_and_foreign_secrets():
    secrets = [secret("a", "hub"), secret("b", "ecr", "2020-01-01T00:00:00Z"),
               secret("c", "ecr", "2099-01-01T00:00:00Z")]
    results = managed(REGISTRIES[:2], secrets, [("x", "regcred-hub")], NOW)
    assert [(r.status, r.detail) for r in results] == [
        ("ok", "1, none stale"), ("fail", "2, stale in b"), ("fail", "x/regcred-hub")]


def webhook(**hook) -> dict:
    base = {"name": "pods.regcred.io", "failurePolicy": "Ignore", "timeoutSeconds": 5, "sideEffects": "NoneOnDryRun",
            "reinvocationPolicy": "IfNeeded", "clientConfig": {"url": "https://x/mutate", "caBundle": "Q0E="},
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["regcred-system"]}]}}
    return {"webhooks": [{**base, **hook}]}


VERIFIED = Served("x:443", True, None, NOW + 30 * 86400)


@pytest.mark.parametrize(("facts", "expected"), [
    pytest.param(WebhookFacts("r", "regcred-system", None), [("fail", "MutatingWebhookConfiguration r")], id="missing"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(), served=VERIFIED, now=NOW), [], id="healthy"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(failurePolicy="Fail", timeoutSeconds=30),
                              served=VERIFIED, now=NOW),
                 [("warn", "failurePolicy"), ("warn", "timeoutSeconds")], id="deviations-warn"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(),
                              served=Served("x:443", True, None, NOW + 6 * 86400), now=NOW),
                 [("fail", "serving certificate validity")], id="expires-within-7-days"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(namespaceSelector={}), served=VERIFIED, now=NOW),
                 [("fail", "namespaceSelector excludes regcred-system")], id="own-namespace-selected"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(clientConfig={"service": {
        "namespace": "regcred-system", "name": "regcred"}, "caBundle": "Q0E="}), endpoints_ready=0, now=NOW),
                 [("fail", "target"), ("warn", "caBundle verifies the served certificate")],
                 id="service-without-endpoints-and-no-port-forward"),
    pytest.param(WebhookFacts("r", "regcred-system", webhook(clientConfig={"url": "https://x/mutate"}), now=NOW),
                 [("fail", "caBundle verifies the served certificate")], id="empty-caBundle"),
])
def test_webhook_checks(facts, expected):
    assert [(r.status, r.name) for r in webhook_checks(facts) if r.status != "ok"] == expected


def test_text_output_marks_on_a_terminal_and_words_elsewhere():
    results = [report.ok("G", "a"), report.fail("G", "b", "broke", "fix it"), report.warn("H", "c", "odd", "look")]
    plain, colored = io.StringIO(), io.StringIO()
    report.print_text(results, plain, color=False)
    report.print_text(results, colored, color=True)
    assert plain.getvalue().splitlines() == [
        "G", "  ok a", "  FAIL b: broke", "      hint: fix it", "", "H", "  WARN c: odd", "      hint: look", "",
        "2/3 checks passed, 1 failed"]
    assert "✔" in colored.getvalue() and "✘" in colored.getvalue() and "FAIL" not in colored.getvalue()
    assert report.exit_code(results) == 1 and report.exit_code(results[::2]) == 0
    out = io.StringIO()
    report.print_json(results, out)
    assert json.loads(out.getvalue())["checks"][1] == {"group": "G", "name": "b", "status": "fail",
                                                        "detail": "broke", "hint": "fix it"}


def test_the_permission_table_names_each_registry_secret_and_the_managed_certificate():
    registries = parse_registries("registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}\n"
                                  "- {id: gar, url: europe-docker.pkg.dev/p/r, type: gcr}\n")
    rows = needed("x-registries", registries, certificate="x-webhook-cert", webhook="x")
    named = {(p.verb, p.resource, p.own_namespace, p.name) for p in rows if p.name}
    assert {("get", "secrets", False, "regcred-hub"), ("delete", "secrets", False, "regcred-gar"),
            ("watch", "secrets", True, "hub-creds"), ("update", "secrets", True, "x-webhook-cert"),
            ("patch", "mutatingwebhookconfigurations", False, "x")} <= named
    assert not any(p.resource == "secrets" and p.verb != "create" and p.name is None for p in rows)
    assert len(rows) == len(PERMISSIONS) + 2 * 5 + 2 + 2 + 2
