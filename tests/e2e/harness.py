"""regcred installed the way the chart installs it, on a real control plane.

- ``install_chart``: render the Helm chart and server-side apply every object; only the webhook's
  ``clientConfig`` changes, to ``url: https://127.0.0.1:<port>/mutate`` (there is no Service
  network here), with the test CA's ``caBundle``.
- ``RegcredProcess``: ``regcred serve`` outside the cluster with the Deployment's own arguments,
  authenticated as the chart's ServiceAccount through a TokenRequest token, never as admin.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trustme
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.support import helmchart
from tests.support.controlplane import ControlPlane, free_port

OWN = helmchart.NAMESPACE
RELEASE = helmchart.RELEASE
SERVICE_ACCOUNT = "regcred"
CREDENTIALS = "private-creds"
FIELD_MANAGER = "regcred-e2e"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.1):
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (ApiException, httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s" + (f" (last error: {last})" if last else ""))


@dataclass
class Serving:
    """The webhook's serving certificate, signed by a test CA."""

    ca: trustme.CA
    cert: Path
    key: Path
    ca_file: Path

    @classmethod
    def create(cls, directory: Path) -> Serving:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="regcred e2e webhook CA")
        leaf = ca.issue_cert("127.0.0.1", "localhost", f"{RELEASE}.{OWN}.svc")
        cert, key, ca_file = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
        for index, pem in enumerate(leaf.cert_chain_pems):
            pem.write_to_path(str(cert), append=index > 0)
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca, cert, key, ca_file)

    @property
    def ca_bundle(self) -> str:
        return b64(self.ca.cert_pem.bytes())


def admin_api(plane: ControlPlane) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = plane.url
    configuration.ssl_ca_cert = str(plane.pki.ca_file)
    configuration.cert_file = str(plane.pki.admin_cert)
    configuration.key_file = str(plane.pki.admin_key)
    return k8s.ApiClient(configuration)


def webhook_url(port: int) -> str:
    return f"https://127.0.0.1:{port}/mutate"


def point_webhook_at(objects: list[dict], url: str, ca_bundle: str) -> None:
    for obj in objects:
        if obj["kind"] == "MutatingWebhookConfiguration":
            for hook in obj["webhooks"]:
                hook["clientConfig"] = {"url": url, "caBundle": ca_bundle}


def apply(api: k8s.ApiClient, objects: list[dict], *, dry_run: bool = False) -> list[dict]:
    """Server-side apply each object, as ``kubectl apply --server-side`` does; returns what the
    API server answered (it raises on the first object it refuses)."""
    dynamic = DynamicClient(api)
    answers = []
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        options: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
        if dry_run:
            options["dry_run"] = "All"
        if resource.namespaced:
            options["namespace"] = obj["metadata"].get("namespace", OWN)
        answers.append(resource.server_side_apply(body=obj, name=obj["metadata"]["name"], **options).to_dict())
    return answers


def ensure_namespace(api: k8s.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    core = k8s.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def install_chart(api: k8s.ApiClient, values: dict, *, url: str, ca_bundle: str) -> helmchart.Rendered:
    """The chart's objects applied for real, the webhook pointed at ``url``."""
    ensure_namespace(api, OWN)
    rendered = helmchart.render(values)
    point_webhook_at(rendered.objects, url, ca_bundle)
    apply(api, rendered.objects)
    return rendered


@dataclass
class RegcredProcess:
    """One ``regcred serve`` replica, run with the chart Deployment's arguments."""

    plane: ControlPlane
    rendered: helmchart.Rendered
    serving: Serving
    workdir: Path
    port: int
    metrics_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    name: str = "regcred"
    api_server: str | None = None  # reach the API server here instead (a proxy in front of it)
    env: dict[str, str] = field(default_factory=dict)
    namespace: str = OWN
    service_account: str = SERVICE_ACCOUNT

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, *, wait: bool = True) -> RegcredProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.plane.service_account_kubeconfig(
            self.workdir / f"{self.name}.kubeconfig", self.namespace, self.service_account, server=self.api_server)
        args = [*self.rendered.args,  # the chart's, then the overrides (argparse keeps the last)
                f"--tls-cert={self.serving.cert}", f"--tls-key={self.serving.key}",
                "--host=127.0.0.1", f"--port={self.port}", f"--metrics-port={self.metrics_port}",
                f"--kubeconfig={kubeconfig}", f"--namespace={self.namespace}", *self.extra_args]
        env = {**os.environ, "POD_NAME": self.name, **self.env}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.process = subprocess.Popen([sys.executable, "-m", "webhook", "serve", *args],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self.log_path.open("ab"), env=env)
        if wait:
            self.wait_ready()
        return self

    def replica(self, workdir: Path, name: str, **changes: Any) -> RegcredProcess:
        """Another replica of the same install, on ports of its own, not yet started."""
        return dataclasses.replace(self, workdir=workdir, name=name, port=free_port(), metrics_port=free_port(),
                                   process=None, **changes)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"regcred exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            return httpx.get(f"{self.base}/readyz", verify=self.ssl_context(), timeout=2).status_code == 200
        try:
            eventually(ready, timeout, f"{self.name} /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-4000:]}") from None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.serving.ca_file))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        total = 0.0
        pattern = re.compile(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$")
        for line in self.metrics().splitlines():
            found = pattern.match(line)
            if not found:
                continue
            sample = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1) or ""))
            if all(sample.get(key) == value for key, value in labels.items()):
                total += float(found.group(2))
        return total


def pod(name: str, *images: str, init: tuple[str, ...] = (), **spec: Any) -> dict:
    """A Pod manifest; ``name`` ending in '-' becomes a generateName."""
    metadata = {"generateName": name} if name.endswith("-") else {"name": name}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {
        "containers": [{"name": f"c{index}", "image": image} for index, image in enumerate(images)],
        **spec}}
    if init:
        body["spec"]["initContainers"] = [{"name": f"i{index}", "image": image} for index, image in enumerate(init)]
    return body


def dockerconfig(secret: k8s.V1Secret | dict) -> dict:
    data = secret.data if isinstance(secret, k8s.V1Secret) else secret["data"]
    return json.loads(base64.b64decode(data[".dockerconfigjson"]))
