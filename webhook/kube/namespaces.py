"""Namespace labels from a watch of namespaces: the tenancy decisions' input, no API call per Pod.

Two readers want different answers for a namespace the cache does not know:

* admission (``labels``) reads it from the API server, once, within ``lookup_timeout``: Helm,
  Argo CD and every "create the namespace, then deploy" pipeline send the first Pod
  milliseconds after the namespace, before its watch event, and a Pod refused then is never
  admitted again. Concurrent Pods of one namespace share the read. If the read fails too,
  ``NamespaceUnknown``: admission refuses selector-restricted registries and says so, since
  failing closed is right when credentials would be handed out. If the API server answers 404,
  ``NamespaceMissing``: the API server admits no Pod into a namespace that does not exist, so
  only a forged review claims one, and it gets no write. A 404 is not remembered (the
  namespace may be created a moment later); the reads are bounded by their own rate limit
  (``lookup_limit``) and timeout whatever a flood of forged names asks. Once that limit is
  spent, a name is not read but waited for, up to ``lookup_timeout``, on the synced watch;
* the refresher (``known_labels``) gets None and so does not evaluate selectors at all: it
  must never revoke a namespace's Secrets because the cache has not synced yet or a watch
  event is late. Revoking is destructive; withholding is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubernetes.client import ApiException

from webhook.jsontypes import JsonObject
from webhook.kube.caches import InformerCache
from webhook.kube.client import KubeClient, describe_api_error
from webhook.kube.informer import RELIST_BACKOFF, Informer
from webhook.tenancy import NamespaceMissing, NamespaceUnknown

log = logging.getLogger(__name__)

_WATCH_POLL = 0.05  # seconds between looks at the cache while waiting for a namespace's watch event


class NamespaceCache(InformerCache):
    def __init__(self, client: KubeClient, *, lookup_timeout: float = 1.0,
                 lookup_limit: tuple[float, int] = (20.0, 50), backoff: tuple[float, float] = RELIST_BACKOFF):
        self._informer = Informer(client, client.core.list_namespace, transform=_labels_only, name="namespaces",
                                  backoff=backoff)
        # Reads an admission waits on: a limit of their own, not queued behind a refresh's writes.
        self._lookups = client.with_limit(*lookup_limit)
        self._timeout = lookup_timeout
        self._inflight: dict[str, asyncio.Task[JsonObject | None]] = {}

    async def labels(self, namespace: str) -> dict[str, str]:
        """For admission: the namespace's labels, from the cache or else from the API server.
        Raises NamespaceMissing if the API server has no such namespace, NamespaceUnknown if
        neither answers."""
        cached = self._informer.get(None, namespace)
        if cached is None:
            task = self._inflight.get(namespace)
            if task is None:
                task = self._inflight[namespace] = asyncio.get_running_loop().create_task(self._read(namespace))
                task.add_done_callback(lambda done: self._read_done(namespace, done))
            cached = await asyncio.shield(task)  # one admission giving up must not cancel the others' read
        if cached is None:
            raise NamespaceMissing(namespace)
        return dict(cached.get("metadata", {}).get("labels") or {})

    def _read_done(self, namespace: str, task: asyncio.Task[JsonObject | None]) -> None:
        del self._inflight[namespace]
        if not task.cancelled():
            task.exception()  # retrieved even when every admission waiting on it gave up

    async def _read(self, namespace: str) -> JsonObject | None:
        if self._informer.synced.is_set() and not self._lookups.limiter.has_token():
            # The live reads' budget is spent on names the synced watch does not know: a flood
            # of forged reviews. The API server calling us is up, and its watch brings a real
            # new namespace within moments; a name it does not bring is taken as missing.
            return await self._watched(namespace)
        try:
            found = await asyncio.wait_for(self._lookups.call_json(
                self._lookups.core.read_namespace, namespace, _request_timeout=self._timeout), self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            error = describe_api_error(exc)
        except Exception as exc:  # a timeout, a refused connection
            error = describe_api_error(exc)
        else:
            self._informer.observe(found)  # its watch event would bring it anyway
            return _labels_only(found)
        log.warning("namespace not cached and not readable", extra={"namespace": namespace, "error": error})
        raise NamespaceUnknown(f"namespace {namespace}: {error}")

    async def _watched(self, namespace: str) -> JsonObject | None:
        deadline = asyncio.get_running_loop().time() + self._timeout
        while (cached := self._informer.get(None, namespace)) is None:
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(_WATCH_POLL)
        return cached

    def known_labels(self, namespace: str) -> dict[str, str] | None:
        """For revocation: the labels, or None until the cache has synced and knows the namespace."""
        if not self._informer.synced.is_set():
            return None
        cached = self._informer.get(None, namespace)
        return None if cached is None else dict(cached["metadata"].get("labels") or {})

    def on_labels_changed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when an existing namespace's labels change (not on create or delete:
        a new namespace holds no Secrets yet, a deleted one takes its Secrets with it)."""

        def changed(kind: str, new: JsonObject | None, old: JsonObject | None) -> None:
            if kind == "MODIFIED" and _label_set(new) != _label_set(old):
                callback()

        self._informer.subscribe(changed)


def _label_set(namespace: JsonObject | None) -> JsonObject:
    return ((namespace or {}).get("metadata") or {}).get("labels") or {}


def _labels_only(namespace: JsonObject) -> JsonObject:
    meta = namespace.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion", "labels") if k in meta}}
