"""Shared set-up for the cluster-mode benchmarks (cold burst, scale).

regcred runs exactly as shipped: ``python -m webhook serve`` in its own process, on the
Kubernetes API of ``tests.fakes.apiserver.FakeApiServer`` (in the benchmark's process) through
a kubeconfig, serving TLS with uvicorn. Admissions come from ``bench._cluster_load`` in a third
process, so neither the fake API server nor the load generator shares regcred's GIL, and the
memory read from ``/proc/<pid>/status`` is regcred's alone.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.common import cpu_seconds, free_port

REPO = Path(__file__).resolve().parents[1]
OWN = "regcred-system"
CONFIGMAP = "regcred-registries"


@dataclass
class Regcred:
    process: subprocess.Popen
    port: int
    metrics_port: int
    ca: Path
    log: Path
    started: float  # time.monotonic() at spawn
    ready_after: float = 0.0  # seconds from spawn to /readyz 200

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM of the regcred process, in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields

    def cpu_seconds(self) -> float:
        """User plus system CPU time regcred has used, all threads."""
        return cpu_seconds(self.pid)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of regcred's /metrics samples named ``name`` carrying ``labels`` (0 when absent)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.partition("{")[0] == name and all(label in series for label in wanted):
                total += float(value)
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def pin_cpus() -> tuple[set[int] | None, set[int] | None]:
    """(regcred's CPUs, everyone else's): on a machine with 2+ CPUs regcred gets one of its own,
    so the fake API server and the load generator do not take the CPU it is measured on."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    others = set(cpus[1:])
    os.sched_setaffinity(0, others)  # this thread; threads and processes started later inherit it
    return {cpus[0]}, others


def start_regcred(api, workdir: Path, *, args: tuple[str, ...] = (), env: dict[str, str | None] | None = None,
                  timeout: float = 120.0, cpus: set[int] | None = None) -> Regcred:
    """Spawn ``regcred serve`` in cluster mode on ``api``; returns once /readyz answers 200.

    ``env`` is added to this process's environment; a None value removes the variable.
    ``cpus``: run regcred on these CPUs only (see ``pin_cpus``).
    """
    port, metrics_port = free_port(), free_port()
    log = workdir / "regcred.log"
    command = [sys.executable, "-m", "webhook", "serve", "--kubeconfig", api.kubeconfig(str(workdir / "kubeconfig")),
               "--namespace", OWN, "--registries-configmap", CONFIGMAP, "--dev-certs-dir", str(workdir / "certs"),
               "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
               "--log-level", "warning", *args]
    started = time.monotonic()
    merged = {**os.environ, **(env or {})}
    process = subprocess.Popen(command, cwd=REPO, env={k: v for k, v in merged.items() if v is not None},
                               stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    regcred = Regcred(process, port, metrics_port, workdir / "certs" / "ca.crt", log, started)
    try:
        _wait_ready(regcred, timeout)
    except BaseException:
        regcred.stop()
        sys.stderr.write(log.read_text()[-4000:])
        raise
    return regcred


def _wait_ready(regcred: Regcred, timeout: float) -> None:
    deadline = regcred.started + timeout
    context = None
    while time.monotonic() < deadline:
        if regcred.process.poll() is not None:
            raise RuntimeError(f"regcred exited with {regcred.process.returncode}")
        if context is None and regcred.ca.exists():
            context = ssl.create_default_context(cafile=str(regcred.ca))
        if context is not None:
            try:
                url = f"https://localhost:{regcred.port}/readyz"
                if urllib.request.urlopen(url, context=context, timeout=5).status == 200:
                    regcred.ready_after = time.monotonic() - regcred.started
                    return
            except OSError:
                pass  # not listening yet, or 503 until the caches sync
        time.sleep(0.05)
    raise TimeoutError(f"regcred not ready within {timeout:.0f}s")


def run_load(job: dict, timeout: float) -> dict:
    """Run ``bench._cluster_load`` in its own process with ``job``; returns its JSON answer."""
    result = subprocess.run([sys.executable, "-m", "bench._cluster_load"], cwd=REPO, input=json.dumps(job),
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def review(uid: str, namespace: str, images: list[str]) -> dict:
    """An AdmissionReview (v1) of a Pod CREATE with one container per image."""
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"pod-{uid}", "namespace": namespace, "labels": {"app": "bench"}},
           "spec": {"containers": containers}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "namespace": namespace, "object": pod,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}}}


def set_registries(api, text: str) -> None:
    api.put_object("configmaps", {"metadata": {"name": CONFIGMAP, "namespace": OWN},
                                  "data": {"registries.yaml": text}})


def print_verdict(checks: list[tuple[str, str, bool, bool]], smoke: bool) -> int:
    """PASS/MISS per target; the exit code. A smoke run fails only on untimed targets (counts,
    memory): timing on a shared CI machine is no verdict."""
    for name, text, ok, _ in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {text}")
    return 0 if all(ok or (timed and smoke) for _, _, ok, timed in checks) else 1
