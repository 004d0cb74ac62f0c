"""Credentials Secrets (``secretRef``) from regcred's own namespace, kept current by a watch.

``read`` is the ``MaterialSource`` the token cache calls from a worker thread: it answers from
the watch-fed cache, never with a request. Listeners hear the name of a Secret whose data
changed (or that appeared or went away), so the token cache can drop credentials minted from
the old material and the refresher can rewrite every pull Secret made from it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from webhook.jsontypes import JsonObject
from webhook.kube.caches import InformerCache
from webhook.kube.client import KubeClient
from webhook.kube.informer import Informer, object_key
from webhook.kube.named import NamedInformers

log = logging.getLogger(__name__)

# Secrets in the namespace that never hold registry credentials but can be large: Helm keeps
# every release revision, compressed, in one; service-account tokens are not ours to read.
_IGNORED_TYPES = frozenset({"helm.sh/release.v1", "kubernetes.io/service-account-token"})


def _credentials_only(secret: JsonObject) -> JsonObject:
    meta = secret.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    data = {} if secret.get("type") in _IGNORED_TYPES else (secret.get("data") or {})
    return {"metadata": kept, "data": data}


def credentials_informer(client: KubeClient, namespace: str, name: str, **options: Any) -> Informer:
    """The Secret ``name`` in ``namespace`` alone: RBAC can grant this one by resourceNames."""
    return Informer(client, client.core.list_namespaced_secret, namespace, field_selector=f"metadata.name={name}",
                    transform=_credentials_only, name=f"credentials-{name}", **options)


class CredentialSecrets(InformerCache):
    def __init__(self, client: KubeClient, namespace: str, informer: Informer | NamedInformers | None = None):
        """``informer``: by default every Secret of the namespace; cluster mode passes one watch
        per credentials Secret name."""
        self._namespace = namespace
        self._informer = informer or Informer(client, client.core.list_namespaced_secret, namespace,
                                              transform=_credentials_only, name="credentials")
        self._listeners: list[Callable[[str], None]] = []
        self._informer.subscribe(self._changed)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """``listener(secret_name)`` on the event loop whenever that Secret's data changes."""
        self._listeners.append(listener)

    def read(self, name: str) -> Mapping[str, bytes] | None:
        secret = self._informer.get(self._namespace, name)
        if secret is None:
            return None
        try:
            return {key: base64.b64decode(value) for key, value in secret["data"].items()}
        except (binascii.Error, TypeError):
            log.warning("credentials Secret data is not base64", extra={"secret": name})
            return None

    def _changed(self, kind: str, new: JsonObject | None, old: JsonObject | None) -> None:
        if new is not None and old is not None and new.get("data") == old.get("data"):
            return  # labels or annotations only: the same credential
        name = object_key(cast(JsonObject, new or old))[1]  # an event carries at least one object
        for listener in self._listeners:
            listener(name)
