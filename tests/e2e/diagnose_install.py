"""regcred installed on a control plane of its own, for the ``check`` and ``explain`` tests.

Those tests break the install on purpose (a wrong caBundle, a removed RBAC rule, regcred
stopped, an expired managed Secret), and two regcreds in one cluster prune each other's
Secrets (each deletes managed Secrets of registries not in its list). So this install gets its
own etcd and kube-apiserver, a few seconds to start, with the chart's default names: the
commands run with their defaults (``--namespace regcred-system``, ``--name regcred``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.e2e.harness import (
    OWN,
    RELEASE,
    RegcredProcess,
    Serving,
    admin_api,
    apply,
    b64,
    ensure_namespace,
    install_chart,
    webhook_url,
)
from tests.support import helmchart
from tests.support.controlplane import ControlPlane, free_port

NAMESPACE = OWN
FULLNAME = RELEASE
CREDENTIALS = "check-creds"
USER, PASSWORD = "check-puller", "check-registry-pass"


def registries(host: str) -> list[dict]:
    basic = {"type": "basic", "secretRef": CREDENTIALS}
    return [{"id": "chk-private", "url": f"{host}/check", **basic},
            {"id": "chk-tenant", "url": f"{host}/check-tenant", **basic, "namespaces": ["granted-*"]}]


def credentials(**data: str) -> dict:
    return {"metadata": {"name": CREDENTIALS},
            "data": {key: b64(value) for key, value in (data or {"username": USER, "password": PASSWORD}).items()}}


@dataclass
class Install:
    plane: ControlPlane
    api: k8s.ApiClient
    rendered: helmchart.Rendered
    process: RegcredProcess

    @classmethod
    def create(cls, host: str, workdir: Path) -> Install:
        plane = ControlPlane.start(workdir / "control-plane")
        api = admin_api(plane)
        serving = Serving.create(workdir / "tls")
        port = free_port()
        values = {"registries": registries(host), "replicaCount": 1,
                  "tls": {"mode": "provided", "provided": {"secretName": "regcred-tls", "caBundle": serving.ca_bundle}}}
        ensure_namespace(api, NAMESPACE)
        k8s.CoreV1Api(api).create_namespaced_secret(NAMESPACE, credentials())
        rendered = install_chart(api, values, url=webhook_url(port), ca_bundle=serving.ca_bundle)
        process = RegcredProcess(plane, rendered, serving, workdir, port, extra_args=("--refresh-interval=0.5",))
        return cls(plane, api, rendered, process.start())

    def restore(self) -> None:
        """Undo what a test broke: the chart's objects as rendered, the credentials as created."""
        apply(self.api, self.rendered.objects)
        k8s.CoreV1Api(self.api).replace_namespaced_secret(CREDENTIALS, NAMESPACE, credentials())

    def run(self, *args: str) -> subprocess.CompletedProcess:
        # The admin kubeconfig first: a test's own --kubeconfig, later, wins.
        command, *rest = args
        argv = [sys.executable, "-m", "webhook", command, f"--kubeconfig={self.plane.kubeconfig}", *rest]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def check(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("check", f"--status-url=http://127.0.0.1:{self.process.metrics_port}/status", *args)

    def explain(self, pod: str, namespace: str, *args: str) -> subprocess.CompletedProcess:
        return self.run("explain", "pod", pod, "-n", namespace, *args)


@contextlib.contextmanager
def installed(host: str, workdir: Path):
    """An Install for one test module, its control plane stopped after it."""
    made = Install.create(host, workdir)
    try:
        yield made
    finally:
        made.process.stop()
        made.api.close()
        made.plane.stop()


@pytest.fixture(scope="module")
def install(registry, tmp_path_factory):
    with installed(registry.host, tmp_path_factory.mktemp("diagnose")) as made:
        yield made


@pytest.fixture
def admin(install):
    """This module's control plane, not the session's."""
    return install.api
