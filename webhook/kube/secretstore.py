"""The Kubernetes SecretStore: managed Secrets cached from watches; plain create, read, replace, delete.

What to write is decided by ``webhook/secretwriter.py`` under ``webhook/writepolicy.py``; this
module only talks to the API server.

The cache: watches of Secrets labelled ``app.kubernetes.io/managed-by=regcred`` (one per
managed name, see webhook/kube/named.py) feed an Informer; every object a write or a read
answers goes into it at once (the watch would bring it anyway; the next admission is answered
now).

Urgent writes (an admission is waiting on them) skip the client's token bucket for a lane of
their own (``URGENT_LIMIT``). The bucket (``--kube-qps``) exists to keep background work - a
refresh of tens of thousands of Secrets, relists - from flooding the API server; an
admission-time write answers a request the API server itself made and is waiting on, and
happens once per namespace and registry (single-flight). Behind the shared bucket, a cold
burst of 100 new namespaces x 3 registries queued 300 creates at 20/s and every Pod missed
the admission budget; the urgent lane lets such a burst through at once and then paces, so a
namespace storm cannot turn into an unbounded write rate either.

Errors surface as ``SecretWriteError`` naming the operation, the Secret and the HTTP status,
never Secret data (ApiException text includes response bodies, so it is never chained).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from kubernetes.client import ApiException

from webhook.jsontypes import JsonObject
from webhook.kube.caches import InformerCache, Shared, WatchCache
from webhook.kube.client import KubeClient, describe_api_error
from webhook.kube.informer import Informer, object_key
from webhook.pullsecrets import (
    CREATED,
    DELETED,
    EXISTS,
    EXPIRES_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NOT_FOUND,
    REPLACED,
    NamespaceGone,
    SecretWriteError,
)
from webhook.writepolicy import is_managed

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# managedFields can outweigh the Secret itself, and the API server restores creationTimestamp
# on every update; everything else a PUT must carry back (owners, finalizers, others' labels) stays.
_DROPPED_METADATA = frozenset({"managedFields", "creationTimestamp", "selfLink"})
_SHARED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})
_shared = Shared()
# The urgent lane (qps, burst): the 300-create cold burst above at once, then 50 writes a second.
URGENT_LIMIT = (50.0, 300)


def slim_secret(secret: JsonObject) -> JsonObject:
    """The cached form of a managed Secret: what the store and the refresher need, with what
    Secrets have in common shared (50,000 Secrets: about 0.7 KB each instead of 2 KB)."""
    meta = {k: _shared(v) if k in _SHARED_METADATA else v
            for k, v in (secret.get("metadata") or {}).items() if k not in _DROPPED_METADATA}
    kept: JsonObject = {k: _shared(secret[k]) for k in ("type", "data", "immutable") if k in secret}
    return {**kept, "metadata": meta}


def managed_secrets_informer(client: KubeClient, **options: Any) -> Informer:
    """Every regcred-managed Secret in the cluster (needs list/watch on every Secret)."""
    return Informer(client, client.core.list_secret_for_all_namespaces, label_selector=MANAGED_SELECTOR,
                    transform=slim_secret, name="managed-secrets", **options)


def pull_secret_informer(client: KubeClient, name: str, **options: Any) -> Informer:
    """The managed Secrets called ``name``, in every namespace: RBAC can grant this one by
    resourceNames (see webhook/kube/named.py)."""
    return Informer(client, client.core.list_secret_for_all_namespaces, label_selector=MANAGED_SELECTOR,
                    field_selector=f"metadata.name={name}", transform=slim_secret, name=f"secret-{name}", **options)


class KubeSecretStore(InformerCache):
    def __init__(self, client: KubeClient, informer: WatchCache | None = None, *,
                 urgent_limit: tuple[float, int] = URGENT_LIMIT):
        self._client = client
        # Same connections and workers, its own limiter; see the module docstring.
        self._urgent = client.with_limit(*urgent_limit)
        self._core = client.core
        self._informer = informer or managed_secrets_informer(client)

    def managed(self) -> list[JsonObject]:
        """A snapshot of every cached managed Secret (slimmed: metadata, type, data)."""
        return self._informer.values()

    def cached(self, namespace: str, name: str) -> JsonObject | None:
        return self._informer.get(namespace, name)

    def create(self, desired: JsonObject, *, urgent: bool = False) -> Coroutine[None, None, int]:
        """CREATED, EXISTS (AlreadyExists), or NOT_FOUND: no such namespace."""
        namespace, name = object_key(desired)
        return self._stored(self._request(self._lane(urgent), "create", namespace, name,
                                          self._core.create_namespaced_secret, namespace, desired,
                                          expect=(NOT_FOUND, EXISTS)), CREATED)

    def replace(self, existing: JsonObject, desired: JsonObject, *, urgent: bool = False) -> Coroutine[None, None, int]:
        """REPLACED, or the NOT_FOUND or EXISTS (stale resourceVersion) the API server answered.
        Carries ``existing``'s resourceVersion and uid (optimistic concurrency)."""
        namespace, name = object_key(desired)
        return self._stored(self._request(self._lane(urgent), "update", namespace, name,
                                          self._core.replace_namespaced_secret, name, namespace,
                                          _replacement(existing, desired), expect=(NOT_FOUND, EXISTS)), REPLACED)

    async def read(self, namespace: str, name: str, *, urgent: bool = False) -> JsonObject | None:
        result = await self._request(self._lane(urgent), "read", namespace, name, self._core.read_namespaced_secret,
                                     name, namespace, expect=(NOT_FOUND,))
        if result == NOT_FOUND:
            return None
        assert not isinstance(result, int)  # only NOT_FOUND was expected
        if is_managed(result):
            self._informer.observe(result)  # the watch would bring it anyway; answer the next ensure now
        return result

    async def delete(self, existing: JsonObject) -> int:
        """DELETED, NOT_FOUND, or EXISTS when the stored object is no longer ``existing``."""
        meta = existing["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        # Preconditions: delete exactly the object judged managed, not one relabelled since.
        options = {"preconditions": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
        result = await self._request(self._client, "delete", namespace, name, self._core.delete_namespaced_secret,
                                     name, namespace, body=options, expect=(NOT_FOUND, EXISTS))
        if result != EXISTS:
            self._informer.forget(namespace, name)
        return DELETED if isinstance(result, dict) else result

    def _lane(self, urgent: bool) -> KubeClient:
        return self._urgent if urgent else self._client

    async def _stored(self, request: Awaitable[JsonObject | int], written: int) -> int:
        """The stored object goes to the cache at once (the watch would bring it anyway; the
        next ensure is answered now)."""
        result = await request
        if isinstance(result, int):
            return result
        self._informer.observe(result)
        return written

    def _request(self, client: KubeClient, action: str, namespace: str, name: str, call: Callable[..., Any],
                 *args: Any, expect: tuple[int, ...] = (), **kwargs: Any) -> Coroutine[None, None, JsonObject | int]:
        """One API call: the decoded body, an expected error status as an int, or SecretWriteError."""
        return self._answer(client.call_json(call, *args, **kwargs), action, namespace, name, expect)

    @staticmethod
    async def _answer(request: Awaitable[JsonObject], action: str, namespace: str, name: str,
                      expect: tuple[int, ...]) -> JsonObject | int:
        try:
            return await request
        except Exception as exc:  # API errors, timeouts, refused connections alike
            if isinstance(exc, ApiException) and exc.status in expect:
                return int(exc.status)
            if namespace_gone(exc):
                raise NamespaceGone(f"{action} Secret {namespace}/{name}: namespace {namespace} does not exist "
                                    "or is being deleted") from None
            reason = describe_api_error(exc)
        raise SecretWriteError(f"{action} Secret {namespace}/{name}: {reason}")


def _replacement(existing: JsonObject, desired: JsonObject) -> JsonObject:
    """desired, keeping what others added to the object (labels, annotations, owners, finalizers)."""
    meta = dict(existing.get("metadata") or {})
    want = desired["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != EXPIRES_ANNOTATION}
    annotations.update(want.get("annotations") or {})
    meta.update(labels={**(meta.get("labels") or {}), **want["labels"]}, annotations=annotations)
    body = {**desired, "metadata": meta}
    if "immutable" in existing:
        body["immutable"] = existing["immutable"]
    return body


def namespace_gone(exc: BaseException) -> bool:
    """The API server refused a write because its namespace is missing (404 naming the
    namespace) or being deleted (NamespaceLifecycle's 403: no new content in a Terminating
    namespace). Retrying cannot help either: the namespace never comes back as it was."""
    if not isinstance(exc, ApiException) or exc.status not in (403, 404):
        return False
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        return False
    if not isinstance(status, dict):
        return False
    if exc.status == 404:
        return (status.get("details") or {}).get("kind") == "namespaces"
    return "because it is being terminated" in str(status.get("message", ""))
