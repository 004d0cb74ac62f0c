"""``--client-ca``: the admission port requires a client certificate signed by the given CA.

Any Pod can reach the webhook Service; the API server can authenticate itself with a client
certificate (its AdmissionConfiguration ``kubeConfigFile``). With ``--client-ca`` a caller
without such a certificate is refused during the TLS handshake, before a byte of its review is
read. The real API server doing this is proven in tests/e2e/test_client_ca.py.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import build_deps
from tests.support.clientcert import make_client_pair
from tests.support.serve import EXAMPLES, ROOT, running_serve
from webhook.app import create_metrics_app

REVIEW = json.loads((EXAMPLES / "admissionreview.json").read_text())


def _post(port: int, context: ssl.SSLContext) -> httpx.Response:
    return httpx.post(f"https://127.0.0.1:{port}/mutate", json=REVIEW, verify=context)


def test_only_callers_with_a_certificate_of_the_client_ca_are_answered(tmp_path) -> None:
    trusted = make_client_pair(tmp_path / "trusted")
    stranger = make_client_pair(tmp_path / "stranger")  # a valid client certificate of another CA
    with running_serve(tmp_path, "--client-ca", str(trusted.ca), client_cert=(trusted.cert, trusted.key)) as (
            port, context, process):
        assert _post(port, context).json()["response"]["patch"]
        plain = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        other = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        other.load_cert_chain(str(stranger.cert), str(stranger.key))
        for refused in (plain, other):
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                _post(port, refused)
        assert process.poll() is None


@pytest.mark.parametrize("content", [pytest.param(None, id="missing"), pytest.param("not a PEM\n", id="not-pem")])
def test_an_unusable_client_ca_stops_the_server_with_a_reason(tmp_path, content) -> None:
    path = tmp_path / "client-ca.crt"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--dev-certs-dir", str(tmp_path / "certs"), "--host", "127.0.0.1", "--port", "1", "--metrics-port", "0",
         "--client-ca", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--client-ca" in done.stderr and "unusable" in done.stderr


def test_the_metrics_port_answers_probes_the_admission_port_would_refuse() -> None:
    """The kubelet's HTTPS probes present no client certificate: with --client-ca they go to the
    metrics port, which answers /healthz and /readyz from the same readiness."""
    deps = build_deps("registries: []\n")
    client = TestClient(create_metrics_app(deps))
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/readyz").status_code == 200
    deps.readiness.set("certificate loaded", False)
    answer = client.get("/readyz")
    assert answer.status_code == 503 and "certificate loaded" in answer.text
