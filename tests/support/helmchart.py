"""The chart rendered by Helm's own Go engine, through helm-python-sdk (its wheel bundles
libhelm: no helm binary), and the rendered objects looked up by kind and name.

Offline rendering is ``helm template``: ``lookup`` returns nothing, so tls.mode selfSigned
generates a fresh CA on every call. Rendering against a cluster (``render_against``) is what
``helm upgrade`` does and is how the tests prove an existing certificate is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.imports import import_or_skip

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "regcred"
RELEASE = "regcred"
NAMESPACE = "regcred-system"


helm = import_or_skip("helm_python")


@dataclass
class Rendered:
    """One render: the objects in template order, and NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str
    sources: dict[str, str]

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def find(self, kind: str, name: str | None = None) -> dict[str, Any] | None:
        found = [obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} {kind} objects named {name}")
        return found[0] if found else None

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        obj = self.find(kind, name)
        assert obj is not None, f"no {kind} {name or ''} in {self.kinds()}"
        return obj

    @property
    def deployment(self) -> dict[str, Any]:
        return self.get("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return container

    @property
    def args(self) -> list[str]:
        return self.container["args"]

    @property
    def webhook(self) -> dict[str, Any]:
        (webhook,) = self.get("MutatingWebhookConfiguration")["webhooks"]
        return webhook


def _parse(manifests: dict[str, str]) -> Rendered:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            notes = manifests[path]
            continue
        objects.extend(doc for doc in yaml.safe_load_all(manifests[path]) if doc)
    return Rendered(objects, notes, manifests)


_chart = None


def chart():
    """The chart, loaded once per session (charts are immutable and thread-safe)."""
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART)
    return _chart


def render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE,
           name: str = RELEASE) -> Rendered:
    """``helm template``: offline, as an install."""
    return _parse(chart().render(values=values or {}, name=name, namespace=namespace, is_install=True))


def render_against(kubeconfig: str | os.PathLike, values: dict[str, Any] | None = None, *,
                   namespace: str = NAMESPACE, name: str = RELEASE) -> Rendered:
    """Render as ``helm upgrade`` does: ``lookup`` reads the cluster behind ``kubeconfig``."""
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        return _parse(config.render(chart(), values or {}, name=name, namespace=namespace,
                                    is_upgrade=True, revision=2))


def values_file() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())
