"""Reinvocation: a sidecar injector that runs after regcred adds a container whose private image
is on another registry; with ``reinvocationPolicy: IfNeeded`` the API server calls regcred
again and the stored Pod references both registries' Secrets."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from kubernetes import client as k8s

from tests.e2e.harness import apply, b64, ensure_namespace, pod

INJECT_LABEL = "regcred-e2e/sidecar"


class SidecarInjector:
    """A tiny mutating webhook: adds one container, once, to every Pod it is sent."""

    def __init__(self, image: str):
        self.image = image
        self.calls = 0
        self.ca = trustme.CA(organization_name="sidecar injector CA")
        injector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                injector.calls += 1
                containers = review["request"]["object"]["spec"]["containers"]
                patch = [] if any(c["name"] == "sidecar" for c in containers) else [
                    {"op": "add", "path": "/spec/containers/-", "value": {"name": "sidecar", "image": injector.image}}]
                response = {"uid": review["request"]["uid"], "allowed": True}
                if patch:
                    response.update(patchType="JSONPatch", patch=b64(json.dumps(patch)))
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def configuration(self) -> dict:
        # Named to sort after "regcred": the API server calls mutating webhooks in name order.
        return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "zz-sidecar-injector"},
                "webhooks": [{
                    "name": "sidecar.e2e.regcred.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                    "failurePolicy": "Fail", "reinvocationPolicy": "Never", "timeoutSeconds": 5,
                    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                               "resources": ["pods"], "scope": "Namespaced"}],
                    "namespaceSelector": {"matchLabels": {INJECT_LABEL: "yes"}},
                    "clientConfig": {"url": f"https://127.0.0.1:{self.server.server_address[1]}/",
                                     "caBundle": base64.b64encode(self.ca.cert_pem.bytes()).decode()}}]}

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def injector(admin, registry):
    running = SidecarInjector(registry.image("team-b/sidecar"))
    apply(admin, [running.configuration])
    yield running
    k8s.AdmissionregistrationV1Api(admin).delete_mutating_webhook_configuration("zz-sidecar-injector")
    running.stop()


def test_regcred_is_called_again_for_the_injected_sidecar(admin, regcred, registry, injector):
    ensure_namespace(admin, "reinvoked", {INJECT_LABEL: "yes"})
    core = k8s.CoreV1Api(admin)
    calls = regcred.metric("regcred_admission_requests_total")
    stored = core.create_namespaced_pod("reinvoked", pod("app", registry.image("team-a/app")))
    assert [c.name for c in stored.spec.containers] == ["c0", "sidecar"]
    assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private", "regcred-sidecars"]
    assert injector.calls == 1
    assert regcred.metric("regcred_admission_requests_total") == calls + 2  # first call and reinvocation
    for name in ("regcred-private", "regcred-sidecars"):
        assert core.read_namespaced_secret(name, "reinvoked").type == "kubernetes.io/dockerconfigjson"
