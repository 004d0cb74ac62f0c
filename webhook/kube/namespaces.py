"""Namespace labels from a watch of namespaces: the tenancy decisions' input, no API call per Pod.

Two readers want different answers for a namespace the cache does not know:

* admission (``labels``) treats it as having no labels, so a ``namespaceSelector`` that needs
  some refuses it: failing closed is right when credentials would be handed out;
* the refresher (``known_labels``) gets None and so does not evaluate selectors at all: it
  must never revoke a namespace's Secrets because the cache has not synced yet or a watch
  event is late. Revoking is destructive; withholding is not.
"""

from __future__ import annotations

from collections.abc import Callable

from webhook.kube.client import KubeClient
from webhook.kube.informer import Informer, InformerCache


class NamespaceCache(InformerCache):
    def __init__(self, client: KubeClient):
        self._informer = Informer(client, client.core.list_namespace, transform=_labels_only, name="namespaces")

    def labels(self, namespace: str) -> dict[str, str]:
        """For admission: the namespace's labels, ``{}`` if unknown (a selector then refuses)."""
        cached = self._informer.get(None, namespace)
        return dict((cached or {}).get("metadata", {}).get("labels") or {})

    def known_labels(self, namespace: str) -> dict[str, str] | None:
        """For revocation: the labels, or None until the cache has synced and knows the namespace."""
        if not self._informer.synced.is_set():
            return None
        cached = self._informer.get(None, namespace)
        return None if cached is None else dict(cached["metadata"].get("labels") or {})

    def on_labels_changed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when an existing namespace's labels change (not on create or delete:
        a new namespace holds no Secrets yet, a deleted one takes its Secrets with it)."""

        def changed(kind: str, new: dict | None, old: dict | None) -> None:
            if kind == "MODIFIED" and _label_set(new) != _label_set(old):
                callback()

        self._informer.subscribe(changed)


def _label_set(namespace: dict | None) -> dict:
    return ((namespace or {}).get("metadata") or {}).get("labels") or {}


def _labels_only(namespace: dict) -> dict:
    meta = namespace.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion", "labels") if k in meta}}
