"""``--client-ca`` on a real API server: it authenticates to regcred with a client certificate.

A control plane of its own, started with ``--admission-control-config-file``: an
AdmissionConfiguration whose WebhookAdmissionConfiguration ``kubeConfigFile`` gives the API
server a client certificate for the webhook's host (127.0.0.1 here; ``regcred.<ns>.svc`` in a
cluster). regcred serves with ``--client-ca`` set to the CA that signed it. A Pod created
through the API server gets its pull Secret; a forged review from a plain client is refused in
the TLS handshake. (This module's ``control_plane`` replaces the session one.)
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from tests.e2e.harness import RegcredProcess, ensure_namespace, eventually, pod
from tests.e2e.standalone import REGISTRY, installed_regcred, own_control_plane
from tests.support.clientcert import ClientPair, make_client_pair
from tests.support.controlplane import free_port
from tests.support.kube import pod_review


@dataclass
class _Authenticated(RegcredProcess):
    """regcred whose readiness probe (and this test's own calls) present the client certificate."""

    client: ClientPair | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = super().ssl_context()
        context.load_cert_chain(str(self.client.cert), str(self.client.key))
        return context


def _admission_config(directory, client: ClientPair, port: int):
    kubeconfig = directory / "webhook-client.kubeconfig"
    user = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    # The user entry is named after the webhook's host, or host:port, as the URL gives it.
    kubeconfig.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "users": [
        {"name": "127.0.0.1", "user": user}, {"name": f"127.0.0.1:{port}", "user": user}]}))
    config = directory / "admission.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration", "plugins": [
            {"name": "MutatingAdmissionWebhook", "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1", "kind": "WebhookAdmissionConfiguration",
                "kubeConfigFile": str(kubeconfig)}}]}))
    return config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("client-ca")
    client, port = make_client_pair(workdir / "client"), free_port()
    config = _admission_config(workdir, client, port)
    plane = own_control_plane(workdir / "plane", ("--admission-control-config-file", str(config)))
    yield plane, client, port, workdir
    plane.stop()


@pytest.fixture(scope="module")
def control_plane(setup):
    return setup[0]


@pytest.fixture(scope="module")
def regcred(setup):
    plane, client, port, workdir = setup
    with installed_regcred(plane, workdir, port, extra_args=(f"--client-ca={client.ca}",),
                           process_class=_Authenticated, client=client) as running:
        yield running


def test_the_api_servers_calls_succeed(regcred):
    process, admin = regcred
    ensure_namespace(admin, "team-a")
    core = k8s.CoreV1Api(admin)

    def created():  # the API server may take a moment to start calling a new webhook configuration
        made = core.create_namespaced_pod("team-a", pod("app-", f"{REGISTRY}/app:1"))
        if made.spec.image_pull_secrets:
            return made
        core.delete_namespaced_pod(made.metadata.name, "team-a")
        return None

    made = eventually(created, what="a patched Pod")
    assert [ref.name for ref in made.spec.image_pull_secrets] == ["regcred-private"]
    assert core.read_namespaced_secret("regcred-private", "team-a").type == "kubernetes.io/dockerconfigjson"
    assert process.metric("regcred_admission_requests_total", result="patched") >= 1


def test_a_forged_review_from_a_plain_client_is_refused_at_tls(regcred):
    process, _ = regcred
    before = process.metric("regcred_admission_requests_total")
    body = json.dumps(pod_review("team-a", f"{REGISTRY}/app:1")).encode()
    plain = ssl.create_default_context(cafile=str(process.serving.ca_file))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(f"{process.base}/mutate", content=body, headers={"content-type": "application/json"},
                   verify=plain)
    # The same review with the certificate is answered: the refusal was the missing certificate.
    answer = httpx.post(f"{process.base}/mutate", content=body, headers={"content-type": "application/json"},
                        verify=process.ssl_context())
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is True
    assert process.metric("regcred_admission_requests_total") == before + 1
