"""``regcred check`` against the real API server: a healthy install passes everything, and
each broken cluster the check is meant to catch gives its FAIL line and hint."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
import trustme
from kubernetes import client as k8s

# admin, credentials, install: fixtures, a control plane for this module
from tests.e2e.diagnose_install import (  # noqa: F401
    CREDENTIALS,
    FULLNAME,
    NAMESPACE,
    Install,
    admin,
    credentials,
    install,
)
from tests.e2e.harness import b64, ensure_namespace
from webhook.diagnose.rbac import needed
from webhook.registries import parse_registries


@pytest.fixture
def broken(install):
    """Whatever the test breaks is put back, and regcred is ready again, before the next."""
    yield install
    install.restore()
    if install.process.process.poll() is not None:
        install.process.start()


def lines(result) -> list[str]:
    return result.stdout.splitlines()


def failed(result) -> list[str]:
    return [line.strip() for line in lines(result) if line.strip().startswith("FAIL")]


def hint_after(result, fail_line: str) -> str:
    text = lines(result)
    index = next(i for i, line in enumerate(text) if line.strip().startswith(fail_line))
    return text[index + 1].strip()


def eventually_check(install: Install, predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = install.check()
        if predicate(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def needed_here(install) -> list:
    """What this install's ServiceAccount needs: the fixed rows and its registries' Secrets."""
    configmap = install.rendered.get("ConfigMap", f"{FULLNAME}-registries")
    return needed(configmap["metadata"]["name"], parse_registries(configmap["data"]["registries.yaml"]))


def test_a_healthy_install_passes_every_check(install):
    # The first mint and the first refresher pass take a moment after readiness.
    result = eventually_check(install, lambda r: r.returncode == 0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert failed(result) == [] and "WARN" not in result.stdout
    for expected in ("ok registry list", "ok chk-private: credentials Secret", "ok caBundle verifies the served",
                     f"has the {len(needed_here(install))} permissions", "ok chk-private: credentials: minted at",
                     "ok namespaceSelector excludes"):
        assert expected in result.stdout, result.stdout
    assert "✔" not in result.stdout  # not a TTY: plain marks


def test_json_output_has_the_same_results(install):
    result = eventually_check(install, lambda r: r.returncode == 0)
    answer = json.loads(install.check("--output=json").stdout)
    assert answer["ok"] is True
    assert len(answer["checks"]) == sum(1 for line in lines(result) if line.startswith("  ok "))


def test_a_ca_bundle_that_does_not_verify(broken, admin):
    other = b64(trustme.CA().cert_pem.bytes())
    k8s.AdmissionregistrationV1Api(admin).patch_mutating_webhook_configuration(
        FULLNAME, [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": other}])
    result = broken.check()
    assert result.returncode == 1
    line = next(line for line in failed(result) if "caBundle verifies the served certificate" in line)
    assert "certificate not verified" in line
    assert "put the CA that signed the serving certificate in caBundle" in hint_after(result, line)


def test_a_missing_credentials_secret(broken, admin):
    k8s.CoreV1Api(admin).delete_namespaced_secret(CREDENTIALS, NAMESPACE)
    result = broken.check()
    line = f"FAIL chk-private: credentials Secret: {NAMESPACE}/{CREDENTIALS} not found"
    assert result.returncode == 1 and line in failed(result)
    assert hint_after(result, line) == f"hint: create it in {NAMESPACE} with the keys username, password"
    with contextlib.suppress(Exception):
        k8s.CoreV1Api(admin).create_namespaced_secret(NAMESPACE, credentials())


def test_a_missing_key_is_named_and_no_value_is_printed(broken, admin):
    k8s.CoreV1Api(admin).replace_namespaced_secret(CREDENTIALS, NAMESPACE, credentials(username="someone"))
    result = broken.check()
    line = f"FAIL chk-private: credentials Secret: {NAMESPACE}/{CREDENTIALS} lacks key(s) password"
    assert line in failed(result)
    assert "add password to" in hint_after(result, line)
    assert "someone" not in result.stdout


def test_a_removed_rbac_rule_is_named(broken, admin):
    rbac = k8s.RbacAuthorizationV1Api(admin)
    role = rbac.read_cluster_role(FULLNAME)
    role.rules = [rule for rule in role.rules if rule.resources != ["namespaces"]]
    rbac.replace_cluster_role(FULLNAME, role)
    subject = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
    result = broken.check()
    assert result.returncode == 1
    assert [line for line in failed(result) if "RBAC" in line or subject in line] == [
        f"FAIL {subject} may not {verb} namespaces cluster-wide: missing rule" for verb in ("get", "list", "watch")]


def test_a_foreign_secret_with_our_name(broken, admin):
    namespace = f"foreign-{time.monotonic_ns() % 10**9}"
    ensure_namespace(admin, namespace)
    k8s.CoreV1Api(admin).create_namespaced_secret(namespace, {"metadata": {"name": "regcred-chk-private"},
                                                              "stringData": {"note": "someone else's"}})
    try:
        result = broken.check()
        line = next(line for line in failed(result) if "regcred does not own" in line)
        assert f"{namespace}/regcred-chk-private" in line
        assert "delete them" in hint_after(result, line)
    finally:
        k8s.CoreV1Api(admin).delete_namespaced_secret("regcred-chk-private", namespace)


def test_the_webhook_down_and_an_expired_managed_secret(broken, admin):
    """With regcred stopped nothing renews Secrets, so an expired one stays expired."""
    broken.process.kill()
    namespace = f"stale-{time.monotonic_ns() % 10**9}"
    ensure_namespace(admin, namespace)
    k8s.CoreV1Api(admin).create_namespaced_secret(namespace, {
        "metadata": {"name": "regcred-chk-private", "annotations": {"regcred.io/expires-at": "2020-01-01T00:00:00Z"},
                     "labels": {"app.kubernetes.io/managed-by": "regcred", "regcred.io/registry": "chk-private"}},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64('{"auths":{}}')}})
    try:
        result = broken.check()
        assert result.returncode == 1
        stale = next(line for line in failed(result) if line.startswith("FAIL chk-private: managed Secrets"))
        assert f"stale in {namespace}" in stale
        served = next(line for line in failed(result) if "caBundle verifies" in line)
        assert "cannot connect (ConnectionRefusedError" in served
        status = next(line for line in failed(result) if line.startswith("FAIL status endpoint"))
        assert "cannot read /status" in status
        assert "is regcred running?" in hint_after(result, status)
    finally:
        k8s.CoreV1Api(admin).delete_namespaced_secret("regcred-chk-private", namespace)


def test_an_unreachable_cluster_exits_2(install, tmp_path):
    config = install.plane.write_kubeconfig(tmp_path / "nowhere.kubeconfig", server="https://127.0.0.1:1")
    result = install.run("check", f"--kubeconfig={config}")
    assert result.returncode == 2 and "cannot reach the API server" in result.stderr


def test_without_a_status_url_check_goes_through_the_api_server_proxy(install):
    """The metrics Service has no endpoints here (no kubelet, no controller-manager): the
    API server's service proxy says so, and check reports it rather than guessing."""
    result = install.run("check", f"--namespace={NAMESPACE}", f"--name={FULLNAME}")
    status = next(line for line in failed(result) if line.startswith("FAIL status endpoint"))
    assert "cannot read /status: HTTP 503" in status


def test_a_webhook_behind_a_service(broken, admin):
    """The chart's default: the API server calls a Service. Without a kubelet nothing fills its
    endpoints, so the test writes an EndpointSlice as the endpoint controller would."""
    admission = k8s.AdmissionregistrationV1Api(admin)
    before = admission.read_mutating_webhook_configuration(FULLNAME).webhooks[0].client_config
    service = {"namespace": NAMESPACE, "name": FULLNAME, "path": "/mutate", "port": 443}
    client_config = {"service": service, "caBundle": before.ca_bundle}
    admission.patch_mutating_webhook_configuration(
        FULLNAME, [{"op": "replace", "path": "/webhooks/0/clientConfig", "value": client_config}])
    discovery = k8s.DiscoveryV1Api(admin)
    try:
        result = broken.check()
        assert f"FAIL target: Service {NAMESPACE}/{FULLNAME} has no ready endpoints" in failed(result)
        assert "WARN caBundle verifies the served certificate: not checked" in result.stdout
        discovery.create_namespaced_endpoint_slice(NAMESPACE, {
            "metadata": {"name": f"{FULLNAME}-e2e", "labels": {"kubernetes.io/service-name": FULLNAME}},
            "addressType": "IPv4", "ports": [{"name": "https", "port": 10250, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": True}}]})
        result = broken.check(f"--webhook-address=127.0.0.1:{broken.process.port}")
        assert f"ok target: Service {NAMESPACE}/{FULLNAME} with 1 ready endpoint(s)" in result.stdout
        # Verified as the API server does: by the Service's DNS name, which the certificate names.
        assert f"ok caBundle verifies the served certificate: 127.0.0.1:{broken.process.port}" in result.stdout
        assert "ok serving certificate validity: expires at" in result.stdout
    finally:
        admission.patch_mutating_webhook_configuration(FULLNAME, [{"op": "replace", "path": "/webhooks/0/clientConfig",
                                                                   "value": {"url": before.url,
                                                                             "caBundle": before.ca_bundle}}])
        with contextlib.suppress(Exception):
            discovery.delete_namespaced_endpoint_slice(f"{FULLNAME}-e2e", NAMESPACE)
