"""Shared benchmark pieces: the realistic review, an app wired with in-memory fakes, percentiles, tables.

The review is what a ReplicaSet controller sends for a real workload: a 3-container Pod (one
init container, two regular ones) whose images match 2 of the 4 listed registries, with the
metadata, env, probes and volumes such Pods carry, so the body is a realistic ~3 KB.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from webhook.activeregistries import ActiveRegistries
from webhook.app import Dependencies, Readiness
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers.basic import BasicProvider
from webhook.pullsecrets import InMemorySecretStore, build_pull_secret
from webhook.secretwriter import SecretWriter

NAMESPACE = "team-a"
REGISTRIES_YAML = """
registries:
  - {id: dockerhub-acme, url: docker.io/acme, type: basic, secretRef: dockerhub-acme}
  - {id: harbor-platform, url: harbor.example.com/platform, type: basic, secretRef: harbor-platform}
  - {id: artifactory, url: acme.jfrog.io/docker-local, type: basic, secretRef: artifactory}
  - {id: acr, url: acme.azurecr.io, type: basic, secretRef: acr}
"""
# Placeholder values: the benchmark never talks to a registry.
CREDENTIALS = {
    name: {"username": f"bench-{name}", "password": f"bench-password-{name}"}
    for name in ("dockerhub-acme", "harbor-platform", "artifactory", "acr")
}
MATCHED_SECRETS = ["regcred-harbor-platform", "regcred-dockerhub-acme"]


def _container(name: str, image: str, port: int) -> dict:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "LOG_LEVEL", "value": "info"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "kube-api-access-x1y2z", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "readOnly": True}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }


def pod() -> dict:
    """The benchmark Pod: init container on harbor, web on Docker Hub acme, nginx unmatched."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-7d4b9c6f5-", "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod",
                       "pod-template-hash": "7d4b9c6f5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c6f5",
                                 "uid": "0b9e2d1c-5a4f-4e8b-9c3d-2f1a0e9d8c7b", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "initContainers": [_container("migrate", "harbor.example.com/platform/migrate:2.1", 8081)],
            "containers": [_container("web", "acme/web:1.4.2", 8080), _container("proxy", "nginx:1.27", 80)],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "web", "securityContext": {"runAsNonRoot": True, "fsGroup": 2000},
            "schedulerName": "default-scheduler", "enableServiceLinks": True, "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access-x1y2z", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
        },
    }


def review(uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict:
    """The AdmissionReview (admission.k8s.io/v1) for a CREATE of ``pod()``."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": NAMESPACE, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "7c1e4b2a-93f0-4d6e-8a5b-1f2e3d4c5b6a",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": pod(), "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def review_body(uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> bytes:
    return json.dumps(review(uid), separators=(",", ":")).encode()


class DictMaterial:
    """MaterialSource over a dict of credentials Secrets (no files, no cluster)."""

    def __init__(self, secrets: Mapping[str, Mapping[str, str]]):
        self._secrets = {name: {k: v.encode() for k, v in data.items()} for name, data in secrets.items()}

    def read(self, name: str) -> Mapping[str, bytes] | None:
        return self._secrets.get(name)


def build_deps(registries_yaml: str = REGISTRIES_YAML,
               credentials: Mapping[str, Mapping[str, str]] | None = None) -> Dependencies:
    """Dependencies as ``regcred serve`` builds them locally: in-memory store, basic provider."""
    metrics = Metrics()
    config = ActiveRegistries(metrics)
    if not config.apply_text(registries_yaml, "bench"):
        raise ValueError(f"bench registry list rejected: {config.errors}")
    material = DictMaterial(copy.deepcopy(dict(credentials or CREDENTIALS)))
    tokens = CredentialCache({"basic": BasicProvider()}, material, metrics)
    readiness = Readiness({"certificate loaded": True})
    return Dependencies(metrics, config, SecretWriter(InMemorySecretStore(), sole_writer=True), tokens, readiness)


async def warm(deps: Dependencies, namespace: str = NAMESPACE) -> None:
    """Make every registry's pull Secret fresh in ``namespace``, as after a first admission."""
    for registry in deps.config.registries.registries:
        credential = await deps.tokens.get(registry)
        await deps.store.ensure(build_pull_secret(registry, credential, namespace))


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of unsorted ``values``."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p90 and p99 of ``values``, in their unit."""
    return {f"p{p}": percentile(values, p) for p in (50, 90, 99)}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, ready to paste into bench/README.md; floats get 3 significant figures."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU time process ``pid`` has used, all threads, or thread ``tid``'s."""
    stat = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(stat).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ThreadCpu:
    """Samples a process's CPU time, and its main (event-loop) thread's, every ``interval``
    seconds in a thread of ours, so the CPU spent between two wall-clock instants can be read
    afterwards (a burst starts inside the load generator, after its connections are open).
    Two small /proc reads per sample: the sampler must not take the CPU it measures."""

    def __init__(self, pid: int, interval: float = 0.02):
        self._pid, self._interval = pid, interval
        self._samples: list[tuple[float, float, float]] = []  # (unix time, process, main thread)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-cpu", daemon=True)

    def __enter__(self) -> ThreadCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds of the event loop's thread and of all the others, from the sample at or
        before ``start`` to the first at or after ``end`` (unix seconds)."""
        if not self._samples:
            raise ValueError("no CPU sample taken")
        before = max((s for s in self._samples if s[0] <= start), default=None) or self._samples[0]
        after = min((s for s in self._samples if s[0] >= end), default=None) or self._samples[-1]
        loop = after[2] - before[2]
        return {"loop": round(loop, 2), "other threads": round(after[1] - before[1] - loop, 2)}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append((time.time(), cpu_seconds(self._pid), cpu_seconds(self._pid, self._pid)))
            except OSError:
                return  # the process is gone
            self._stop.wait(self._interval)
