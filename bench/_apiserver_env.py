"""The API-server benchmark's cluster: a real control plane, regcred as the chart installs it, a
no-op webhook beside it, and raw-HTTP clients that create Pods as a controller would.

All three setups live in one cluster at once, told apart by a namespace label: each webhook
configuration's ``namespaceSelector`` also requires ``regcred-bench/setup`` to name it, so a
Pod in the ``none`` namespace calls no webhook, one in ``noop`` calls only the no-op, one in
``regcred`` only regcred. Rounds can then interleave with no configuration change, which the
API server would pick up only eventually (its webhook configurations come from an informer).
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from kubernetes import client as k8s

from bench.common import CREDENTIALS, REGISTRIES_YAML, free_port
from tests.e2e.harness import (
    OWN,
    RegcredProcess,
    Serving,
    admin_api,
    apply,
    b64,
    ensure_namespace,
    eventually,
    point_webhook_at,
    webhook_url,
)
from tests.support import helmchart
from tests.support.controlplane import ControlPlane

SETUP_LABEL = "regcred-bench/setup"
SETUPS = ("none", "noop", "regcred")
NOOP_WEBHOOK = "noop.bench.regcred.io"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Cluster:
    plane: ControlPlane
    admin: k8s.ApiClient
    regcred: RegcredProcess
    noop: subprocess.Popen
    regcred_webhook: str  # the webhook's name, as the API server's metrics label it

    def stop(self) -> None:
        self.regcred.stop()
        if self.noop.poll() is None:
            self.noop.terminate()
            self.noop.wait(timeout=30)
        self.admin.close()
        self.plane.stop()


def start(workdir: Path, noop_patch: list[dict] | None = None) -> Cluster:
    """Control plane, chart, credentials, regcred and the no-op (answering with ``noop_patch``
    if given); returns when all are ready."""
    plane = ControlPlane.start(workdir / "control-plane")
    admin = admin_api(plane)
    noop = None
    try:
        serving = Serving.create(workdir / "tls")
        port, noop_port = free_port(), free_port()
        values = {"registries": yaml.safe_load(REGISTRIES_YAML)["registries"], "replicaCount": 1,
                  "tls": {"mode": "provided", "provided": {"secretName": "regcred-tls",
                                                           "caBundle": serving.ca_bundle}}}
        ensure_namespace(admin, OWN)
        core = k8s.CoreV1Api(admin)
        for name, data in CREDENTIALS.items():
            core.create_namespaced_secret(OWN, {"metadata": {"name": name},
                                                "data": {key: b64(value) for key, value in data.items()}})
        rendered = helmchart.render(values)
        point_webhook_at(rendered.objects, webhook_url(port), serving.ca_bundle)
        configuration = rendered.get("MutatingWebhookConfiguration")
        noop_config = noop_configuration(configuration, webhook_url(noop_port))
        select_setup(configuration, "regcred")
        apply(admin, [*rendered.objects, noop_config])
        noop = subprocess.Popen([sys.executable, "-m", "bench.noop_webhook", "--port", str(noop_port),
                                 "--cert", str(serving.cert), "--key", str(serving.key),
                                 *(["--patch", json.dumps(noop_patch)] if noop_patch else [])], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=(workdir / "noop.log").open("ab"))
        eventually(lambda: httpx.get(f"https://127.0.0.1:{noop_port}/readyz", timeout=2,
                                     verify=serving.ca_file.as_posix()).status_code == 200, 30, "no-op /readyz")
        regcred = RegcredProcess(plane, rendered, serving, workdir / "regcred", port).start()
    except BaseException:
        if noop is not None:
            noop.kill()
        admin.close()
        plane.stop()
        raise
    return Cluster(plane, admin, regcred, noop, configuration["webhooks"][0]["name"])


def select_setup(configuration: dict, setup: str) -> None:
    """Narrow every webhook of ``configuration`` to namespaces labelled for ``setup``."""
    for hook in configuration["webhooks"]:
        hook["namespaceSelector"].setdefault("matchExpressions", []).append(
            {"key": SETUP_LABEL, "operator": "In", "values": [setup]})


def noop_configuration(regcred: dict, url: str) -> dict:
    """The chart's webhook configuration, every field as shipped, pointed at the no-op."""
    noop = copy.deepcopy(regcred)
    noop["metadata"] = {"name": "regcred-bench-noop"}
    for hook in noop["webhooks"]:
        hook["name"] = NOOP_WEBHOOK
        hook["sideEffects"] = "None"
    point_webhook_at([noop], url, regcred["webhooks"][0]["clientConfig"]["caBundle"])
    select_setup(noop, "noop")
    return noop


def create_namespace(cluster: Cluster, name: str, setup: str) -> None:
    ensure_namespace(cluster.admin, name, {SETUP_LABEL: setup})


def webhook_calls(plane: ControlPlane) -> dict[str, float]:
    """How many admission calls the API server has made to each webhook (its own metric)."""
    request = urllib.request.Request(plane.url + "/metrics")
    with urllib.request.urlopen(request, context=plane.ssl_context(), timeout=10) as response:
        text = response.read().decode()
    calls: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_admission_webhook_admission_duration_seconds_count{"):
            name = re.search(r'name="([^"]*)"', line).group(1)
            calls[name] = calls.get(name, 0.0) + float(line.rpartition(" ")[2])
    return calls


@dataclass
class Created:
    seconds: float
    status: int
    pull_secrets: list[str]
    warning: str | None  # the Warning header the API server relayed, if any


class PodClient:
    """One keep-alive HTTPS connection to the API server as admin, creating Pods from raw JSON:
    the kubernetes client's own (de)serialisation would add milliseconds to every figure."""

    def __init__(self, plane: ControlPlane):
        self._connection = http.client.HTTPSConnection("127.0.0.1", plane.api_port, context=plane.ssl_context(),
                                                       timeout=60)
        self._connection.connect()  # the handshake is not part of any Pod's latency

    def create(self, namespace: str, body: bytes) -> Created:
        began = time.perf_counter()
        self._connection.request("POST", f"/api/v1/namespaces/{namespace}/pods", body,
                                 {"Content-Type": "application/json", "Accept": "application/json"})
        response = self._connection.getresponse()
        data = response.read()
        seconds = time.perf_counter() - began
        secrets = []
        if response.status == 201:
            secrets = [ref["name"] for ref in json.loads(data)["spec"].get("imagePullSecrets", [])]
        return Created(seconds, response.status, secrets, response.getheader("Warning"))

    def close(self) -> None:
        self._connection.close()
