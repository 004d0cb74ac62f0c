"""The Kubernetes SecretStore: a watch-fed warm path, a careful cold path, single-flight writes.

Warm path: a cluster-wide watch of Secrets labelled ``app.kubernetes.io/managed-by=regcred``
feeds an Informer; an ensure whose Secret is cached and current is answered from memory with
zero API calls.

Cold path:

* create; a 409 AlreadyExists means someone was first (another replica, a user, a watch event
  not yet seen), so read it back;
* not ours (no managed-by label): never modified, outcome "conflict"; remembered for a while,
  because our label-selected watch never sees foreign Secrets and every Pod of that namespace
  would otherwise cost a create and a get;
* ours and stale: replace it carrying its resourceVersion and uid (optimistic concurrency); a
  409 Conflict means it changed under us, so read again and retry, a bounded number of times.

Urgent writes (an admission is waiting on them) skip the client's token bucket for a lane of
their own (``URGENT_LIMIT``). The bucket (``--kube-qps``) exists to keep background work - a
refresh of tens of thousands of Secrets, relists - from flooding the API server; an
admission-time write answers a request the API server itself made and is waiting on, and
happens once per namespace and registry (single-flight). Behind the shared bucket, a cold
burst of 100 new namespaces x 3 registries queued 300 creates at 20/s and every Pod missed
the admission budget; the urgent lane lets such a burst through at once and then paces, so a
namespace storm cannot turn into an unbounded write rate either. A Secret whose write just
failed (a quota, an outage) loses that lane for ``failing_ttl`` seconds, so every Pod
admitted in its namespace cannot become an unlimited retry.

Two replicas each mint their own short-lived token, so they always want different contents.
Only an ``authoritative`` ensure (the refresher, on the leader) replaces a managed Secret
because it differs; any other keeps a managed Secret for the same registry url that is still
fresh (``pullsecrets.may_keep``) and answers "unchanged". Followers then never fight the
leader, and a rotation written by the leader is never undone by a token minted from the old
credentials.

Errors surface as ``SecretWriteError`` naming the operation, the Secret and the HTTP status,
never Secret data (ApiException text includes response bodies, so it is never chained).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine

from kubernetes.client import ApiException

from webhook.expiring import Expiring
from webhook.kube.client import KubeClient, describe_error
from webhook.kube.informer import Informer, InformerCache, Key, Shared, object_key
from webhook.kube.named import NamedInformers
from webhook.pullsecrets import (EXPIRES_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, Ensured, NamespaceGone,
                                 SecretWriteError, is_current, is_managed, may_keep)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# managedFields can outweigh the Secret itself, and the API server restores creationTimestamp
# on every update; everything else a PUT must carry back (owners, finalizers, others' labels) stays.
_DROPPED_METADATA = frozenset({"managedFields", "creationTimestamp", "selfLink"})
_SHARED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})
_shared = Shared()
# The urgent lane (qps, burst): the 300-create cold burst above at once, then 50 writes a second.
URGENT_LIMIT = (50.0, 300)
# Foreign Secrets and failing writes remembered at most (a few MB), each for its ttl.
REMEMBERED_MAX = 10_000


def slim_secret(secret: dict) -> dict:
    """The cached form of a managed Secret: what the store and the refresher need, with what
    Secrets have in common shared (50,000 Secrets: about 0.7 KB each instead of 2 KB)."""
    meta = {k: _shared(v) if k in _SHARED_METADATA else v
            for k, v in (secret.get("metadata") or {}).items() if k not in _DROPPED_METADATA}
    kept = {k: _shared(secret[k]) for k in ("type", "data", "immutable") if k in secret}
    return {**kept, "metadata": meta}


def managed_secrets_informer(client: KubeClient, **options) -> Informer:
    """Every regcred-managed Secret in the cluster (needs list/watch on every Secret)."""
    return Informer(client, client.core.list_secret_for_all_namespaces, label_selector=MANAGED_SELECTOR,
                    transform=slim_secret, name="managed-secrets", **options)


def pull_secret_informer(client: KubeClient, name: str, **options) -> Informer:
    """The managed Secrets called ``name``, in every namespace: RBAC can grant this one by
    resourceNames (see webhook/kube/named.py)."""
    return Informer(client, client.core.list_secret_for_all_namespaces, label_selector=MANAGED_SELECTOR,
                    field_selector=f"metadata.name={name}", transform=slim_secret, name=f"secret-{name}", **options)


class KubeSecretStore(InformerCache):
    def __init__(self, client: KubeClient, informer: Informer | NamedInformers | None = None, *, attempts: int = 4,
                 foreign_ttl: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 urgent_limit: tuple[float, int] = URGENT_LIMIT, failing_ttl: float = 10.0,
                 wall_clock: Callable[[], float] = time.time):
        self._client = client
        # Same connections and workers, its own limiter; see the module docstring.
        self._urgent = client.with_limit(*urgent_limit)
        self._core = client.core
        self._informer = informer or managed_secrets_informer(client)
        self._attempts = attempts
        self._wall_clock = wall_clock  # unix seconds, against the expires-at annotations
        # Bounded and swept (namespaces come and go; see webhook/expiring.py).
        self._foreign: Expiring[Key, bool] = Expiring(foreign_ttl, REMEMBERED_MAX, clock=clock)
        self._failing: Expiring[Key, bool] = Expiring(failing_ttl, REMEMBERED_MAX, clock=clock)
        self._inflight: dict[Key, tuple[tuple[dict, bool], asyncio.Task]] = {}
        self._stopping = False
        self._informer.subscribe(self._on_change)

    async def stop(self) -> None:
        """Cancel the writes in flight and refuse new ones (the client closes next), then stop
        the watch."""
        self._stopping = True
        tasks = [task for _, task in self._inflight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()

    def managed(self) -> list[dict]:
        """A snapshot of every cached managed Secret (slimmed: metadata, type, data)."""
        return self._informer.values()

    def cached(self, namespace: str, name: str) -> dict | None:
        return self._informer.get(namespace, name)

    def settled(self, desired: dict) -> bool:
        cached = self._informer.get(*object_key(desired))
        return cached is not None and self._decide(cached, desired, False) == "unchanged"

    def ensure(self, desired: dict, *, dry_run: bool = False, urgent: bool = False,
               authoritative: bool = False) -> asyncio.Future[Ensured]:
        """``urgent``: an admission waits on this write, so it skips the shared rate limit.
        ``authoritative``: replace a managed Secret that differs, even a fresh one (the refresher).

        A write runs in a task, started before this returns; await the future for the outcome.
        """
        key = object_key(desired)
        cached = self._informer.get(*key)
        if cached is not None and self._decide(cached, desired, authoritative) == "unchanged":
            return _answered(Ensured("unchanged"))
        if cached is None and key in self._foreign:
            return _answered(Ensured("conflict"))
        client = self._urgent if urgent and key not in self._failing else self._client
        if dry_run:
            return asyncio.ensure_future(self._dry_run(desired, cached, client, authoritative))
        return self._single_flight(key, (desired, authoritative), client)

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete a managed Secret; True if this call deleted it. Foreign ones are never touched."""
        existing = self._informer.get(namespace, name) or await self._read(namespace, name, self._client)
        for _ in range(self._attempts):
            if existing is None or not is_managed(existing):
                return False
            meta = existing["metadata"]
            # Preconditions: delete exactly the object judged managed, not one relabelled since.
            options = {"preconditions": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
            result = await self._request(self._client, "delete", namespace, name,
                                         self._core.delete_namespaced_secret, name, namespace, body=options,
                                         expect=(404, 409))
            if result == 404:
                self._informer.forget(namespace, name)
                return False
            if result != 409:
                self._informer.forget(namespace, name)
                return True
            existing = await self._read(namespace, name, self._client)
        raise SecretWriteError(f"delete Secret {namespace}/{name}: still conflicting after {self._attempts} attempts")

    # ---- cold path

    def _single_flight(self, key: Key, wanted: tuple[dict, bool], client: KubeClient) -> asyncio.Future[Ensured]:
        # An authoritative ensure shares only an authoritative write: a lenient one may have
        # kept a rival's Secret and answered "unchanged".
        if self._stopping:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(SecretWriteError(f"write Secret {key[0]}/{key[1]}: regcred is stopping"))
            return future
        running = self._inflight.get(key)
        if running is not None:
            theirs, task = running
            if theirs == wanted:
                return asyncio.shield(task)
            return asyncio.ensure_future(self._after(task, key, wanted, client))
        desired, authoritative = wanted
        existing = self._informer.get(*key)
        task = asyncio.get_running_loop().create_task(self._write(desired, authoritative, client, existing))
        self._inflight[key] = (wanted, task)
        task.add_done_callback(lambda done: self._finished(key, done))
        return asyncio.shield(task)

    async def _after(self, task: asyncio.Task, key: Key, wanted: tuple[dict, bool], client: KubeClient) -> Ensured:
        """Another version is being written; ours goes after it."""
        await asyncio.wait([task])
        return await self._single_flight(key, wanted, client)

    def _finished(self, key: Key, task: asyncio.Task) -> None:
        if self._inflight.get(key, (None, None))[1] is task:
            del self._inflight[key]
        # Retrieved even when every caller gave up, so it is not logged as "never retrieved".
        if not task.cancelled() and isinstance(task.exception(), SecretWriteError):
            self._failing.set(key, True)

    async def _write(self, desired: dict, authoritative: bool, client: KubeClient, existing: dict | None) -> Ensured:
        namespace, name = key = object_key(desired)
        for _ in range(self._attempts):
            if existing is None:
                status = await self._create(desired, client)
                if status == 201:
                    return Ensured("created")
                if status == 404:  # a create finds nothing else missing: nothing to write, ever
                    raise NamespaceGone(f"create Secret {namespace}/{name}: namespace {namespace} not found")
                existing = await self._read(namespace, name, client)
                if existing is None:
                    continue  # deleted between our create and our read
            outcome = self._decide(existing, desired, authoritative)
            if outcome == "conflict":
                self._foreign.set(key, True)
            if outcome is not None:
                return Ensured(outcome)
            status = await self._replace(existing, desired, client)
            if status == 200:
                return Ensured("updated")
            existing = None if status == 404 else await self._read(namespace, name, client)
        raise SecretWriteError(f"write Secret {namespace}/{name}: still conflicting after {self._attempts} attempts")

    async def _dry_run(self, desired: dict, cached: dict | None, client: KubeClient,
                       authoritative: bool) -> Ensured:
        if cached is not None:
            return Ensured("dry_run")  # ours and stale: a real run would update it
        # Not cached: absent or foreign, and only a read tells which.
        existing = await self._read(*object_key(desired), client)
        return Ensured((self._decide(existing, desired, authoritative) if existing is not None else None)
                       or "dry_run")

    def _create(self, desired: dict, client: KubeClient) -> Coroutine[None, None, int]:
        """201, 409 when something by that name exists (AlreadyExists), or 404: no such namespace."""
        namespace, name = object_key(desired)
        return self._stored(self._request(client, "create", namespace, name, self._core.create_namespaced_secret,
                                          namespace, desired, expect=(404, 409)), 201)

    def _replace(self, existing: dict, desired: dict, client: KubeClient) -> Coroutine[None, None, int]:
        """200, or the 404 or 409 (stale resourceVersion) the API server answered."""
        namespace, name = object_key(desired)
        return self._stored(self._request(client, "update", namespace, name, self._core.replace_namespaced_secret,
                                          name, namespace, _replacement(existing, desired), expect=(404, 409)), 200)

    async def _stored(self, request: Awaitable[dict | int], written: int) -> int:
        """The stored object goes to the cache at once (the watch would bring it anyway; the
        next ensure is answered now)."""
        result = await request
        if isinstance(result, int):
            return result
        self._informer.observe(result)
        return written

    async def _read(self, namespace: str, name: str, client: KubeClient) -> dict | None:
        result = await self._request(client, "read", namespace, name, self._core.read_namespaced_secret,
                                     name, namespace, expect=(404,))
        if result == 404:
            return None
        if is_managed(result):
            self._informer.observe(result)  # the watch would bring it anyway; answer the next ensure now
        return result

    def _request(self, client: KubeClient, action: str, namespace: str, name: str, call, *args,
                 expect=(), **kwargs) -> Coroutine:
        """One API call: the decoded body, an expected error status as an int, or SecretWriteError."""
        return self._answer(client.call_json(call, *args, **kwargs), action, namespace, name, expect)

    @staticmethod
    async def _answer(request: Awaitable[dict], action: str, namespace: str, name: str, expect) -> dict | int:
        try:
            return await request
        except Exception as exc:  # API errors, timeouts, refused connections alike
            if isinstance(exc, ApiException) and exc.status in expect:
                return exc.status
            if namespace_gone(exc):
                raise NamespaceGone(f"{action} Secret {namespace}/{name}: namespace {namespace} does not exist "
                                    "or is being deleted") from None
            reason = describe_error(exc)
        raise SecretWriteError(f"{action} Secret {namespace}/{name}: {reason}")

    def _decide(self, existing: dict, desired: dict, authoritative: bool) -> str | None:
        """conflict (not ours), unchanged (nothing to write), or None (replace it)."""
        if not is_managed(existing):
            return "conflict"
        if is_current(existing, desired):
            return "unchanged"
        if not authoritative and may_keep(existing, desired, self._wall_clock()):
            return "unchanged"
        return None

    # ---- what we remember for a while: foreign Secrets, failing writes

    def _on_change(self, kind: str, new: dict | None, old: dict | None) -> None:
        if new is not None:  # it carries our label now: no longer foreign
            self._foreign.discard(object_key(new))


def _answered(outcome: Ensured) -> asyncio.Future[Ensured]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future


def _replacement(existing: dict, desired: dict) -> dict:
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
