"""A second regcred install for the ``check`` and ``explain`` tests, in its own namespace and
release: those tests break it on purpose (a wrong caBundle, a removed RBAC rule, regcred
stopped), and the session's shared install must stay healthy for everyone else.

Its registries live under ``<registry>/check*``, which no other test's images use, so the
two webhooks never act on each other's Pods.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.harness import RegcredProcess, Serving, apply, b64, ensure_namespace, point_webhook_at, webhook_url
from tests.support import helmchart
from tests.support.controlplane import ControlPlane, free_port

NAMESPACE = "regcheck-system"
RELEASE = "regcheck"
FULLNAME = "regcheck-regcred"  # the chart's fullname for this release
CREDENTIALS = "check-creds"
USER, PASSWORD = "check-puller", "check-registry-pass"


def registries(host: str) -> list[dict]:
    basic = {"type": "basic", "secretRef": CREDENTIALS}
    return [{"id": "chk-private", "url": f"{host}/check", **basic},
            {"id": "chk-tenant", "url": f"{host}/check-tenant", **basic, "namespaces": ["granted-*"]}]


@dataclass
class Install:
    plane: ControlPlane
    api: k8s.ApiClient
    rendered: helmchart.Rendered
    process: RegcredProcess

    @classmethod
    def create(cls, plane: ControlPlane, api: k8s.ApiClient, host: str, workdir: Path) -> Install:
        serving = Serving.create(workdir / "tls")
        port = free_port()
        values = {"registries": registries(host), "replicaCount": 1,
                  "tls": {"mode": "provided", "provided": {"secretName": "regcheck-tls", "caBundle": serving.ca_bundle}}}
        ensure_namespace(api, NAMESPACE)
        try:
            k8s.CoreV1Api(api).create_namespaced_secret(NAMESPACE, cls.credentials())
        except ApiException as exc:  # made by the module before: several modules use an install
            if exc.status != 409:
                raise
        rendered = helmchart.render(values, namespace=NAMESPACE, name=RELEASE)
        point_webhook_at(rendered.objects, webhook_url(port), serving.ca_bundle)
        apply(api, rendered.objects)
        kubeconfig = plane.service_account_kubeconfig(workdir / "sa.kubeconfig", NAMESPACE, FULLNAME)
        process = RegcredProcess(plane, rendered, serving, workdir, port, name="regcheck", extra_args=(
            f"--namespace={NAMESPACE}", f"--kubeconfig={kubeconfig}", "--refresh-interval=0.5"))
        return cls(plane, api, rendered, process.start())

    @staticmethod
    def credentials(**data: str) -> dict:
        return {"metadata": {"name": CREDENTIALS},
                "data": {key: b64(value) for key, value in (data or {"username": USER, "password": PASSWORD}).items()}}

    def restore(self) -> None:
        """Undo what a test broke: the chart's objects as rendered, the credentials as created."""
        apply(self.api, self.rendered.objects)
        k8s.CoreV1Api(self.api).replace_namespaced_secret(CREDENTIALS, NAMESPACE, self.credentials())

    def remove(self) -> None:
        self.process.stop()
        admission = k8s.AdmissionregistrationV1Api(self.api)
        admission.delete_mutating_webhook_configuration(FULLNAME)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        # The admin kubeconfig first: a test's own --kubeconfig, later, wins.
        command, *rest = args
        return subprocess.run([sys.executable, "-m", "webhook", command, f"--kubeconfig={self.plane.kubeconfig}", *rest],
                              capture_output=True, text=True, timeout=60)

    def check(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("check", f"--namespace={NAMESPACE}", f"--name={FULLNAME}",
                        f"--status-url=http://127.0.0.1:{self.process.metrics_port}/status", *args)

    def explain(self, pod: str, namespace: str, *args: str) -> subprocess.CompletedProcess:
        return self.run("explain", "pod", pod, "-n", namespace, f"--regcred-namespace={NAMESPACE}",
                        f"--name={FULLNAME}", *args)


@contextlib.contextmanager
def installed(plane: ControlPlane, api: k8s.ApiClient, host: str, workdir: Path):
    """An Install for one test module, removed after it."""
    made = Install.create(plane, api, host, workdir)
    try:
        yield made
    finally:
        made.remove()
