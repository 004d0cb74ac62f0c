"""A list+watch cache of raw JSON objects: client-go's reflector and store, trimmed to regcred's needs.

* Objects stay dicts, optionally slimmed by ``transform`` (client-go's SetTransform): typed
  models would cost seconds for tens of thousands of Secrets, and managedFields are dead weight.
* The list is paginated (``limit``) so a large cluster is served in pages from the apiserver's
  consistent snapshot; the watch starts at the list's resourceVersion with bookmarks, so an
  idle watch still advances and a reconnect does not replay history.
* A watch that ends (the server's timeout, a stream cut by an apiserver restart) resumes from
  the last resourceVersion seen, as client-go does: relisting tens of thousands of Secrets on
  every reconnect would be the expensive way to learn nothing. A 410 Expired (history
  compacted) relists at once; any other error (the watch cannot be opened, an ERROR event)
  relists after an exponential backoff with jitter, so an outage is not hammered.
* A relist replaces the cache and reports the difference, so a deletion missed while
  disconnected still reaches listeners as DELETED.
* Listeners run on the event loop, in watch order: ``listener(type, new, old)`` with type
  ADDED, MODIFIED or DELETED (``new`` is None for DELETED).
* ``observe`` caches responses to our own reads and writes ahead of their watch events, so the
  next admission in a namespace is answered from memory. Those responses come back late from
  worker threads, so one may be older than the watch's position: an object absent from the
  cache whose version the list or watch has already passed was deleted (or left the
  selection) meanwhile, and is not brought back. One number, the stream's position, says so
  for every deletion: no tombstone per object to bound.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

from webhook.jsontypes import JsonObject
from webhook.kube.caches import Listener
from webhook.kube.client import KubeClient, describe_api_error

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Expired(Exception):
    """The watch's resourceVersion is older than the apiserver's history (410 Gone/Expired)."""


class WatchFailed(Exception):
    """The watch stream carried an ERROR event other than 410."""


# A failed list or watch is retried after (first, longest) seconds, doubling, with jitter.
RELIST_BACKOFF = (0.5, 30.0)


def object_key(obj: JsonObject) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _version(obj: JsonObject | None) -> int:
    # resourceVersions are opaque strings by contract, but every apiserver serves etcd
    # revisions; comparing them only guards against applying an event older than a write
    # already cached, and anything unparsable compares as "unknown" (never newer).
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


class Informer:
    def __init__(self, client: KubeClient, list_call: Callable[..., Any], *args: Any,
                 label_selector: str | None = None, field_selector: str | None = None,
                 transform: Callable[[JsonObject], JsonObject] | None = None, page_size: int = 500,
                 watch_timeout: int = 300, backoff: tuple[float, float] = RELIST_BACKOFF,
                 name: str = "informer", on_error: Callable[[BaseException], None] | None = None):
        self._client = client
        self._list_call = list_call
        self._args = args
        self._selectors = {key: value for key, value in (("label_selector", label_selector),
                           ("field_selector", field_selector)) if value}
        self._transform = transform or (lambda obj: obj)
        self._page_size = page_size
        # Randomized like client-go (5-10 min there) so many watches do not reconnect together.
        self._watch_timeout = int(watch_timeout * random.uniform(1.0, 1.5))
        self._backoff = backoff
        self.name = name
        self._on_error = on_error  # told of every failed list or watch (a 403 among them)
        self.synced = asyncio.Event()
        self.relists = 0
        self._items: dict[Key, JsonObject] = {}
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._response: Any = None
        self._position = -1  # the resourceVersion the list and watch have reached, as applied

    # ---- reading the cache; safe from worker threads too (single dict operations, GIL-atomic)

    def get(self, namespace: str | None, name: str) -> JsonObject | None:
        return self._items.get((namespace or "", name))

    def values(self) -> list[JsonObject]:
        """A snapshot list of the cached objects; they are shared, so never modify them."""
        return list(self._items.values())

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def observe(self, obj: JsonObject) -> None:
        """Cache the result of our own read or write now, ahead of its watch event; a copy the
        watch has already gone past is ignored (see the module docstring)."""
        obj = self._transform(obj)
        version = _version(obj)
        if 0 <= version <= self._position and self._items.get(object_key(obj)) is None:
            return
        self._apply("MODIFIED", obj)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object we deleted ourselves, ahead of its watch event."""
        old = self._items.pop((namespace, name), None)
        if old is not None:
            self._emit("DELETED", None, old)

    # ---- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"informer-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the watch thread's read at once
            except (ValueError, RuntimeError, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stopping:
            try:
                rv = await self._relist()
                delay = self._backoff[0]
                while not self._stopping:
                    rv = await self._watch_once(rv)
            except Expired as exc:
                log.info("watch expired; relisting", extra={"informer": self.name, "reason": str(exc)})
            except Exception as exc:
                if self._stopping:
                    return
                if self._on_error is not None:
                    self._on_error(exc)
                log.warning("list/watch failed; relisting after backoff",
                            extra={"informer": self.name, "error": describe_api_error(exc),
                                   "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._backoff[1])

    # ---- list

    async def _relist(self) -> str:
        items: list[tuple[Key, JsonObject]] = []
        token: str | None = None
        while True:
            page, meta = await self._client.call(self._fetch_page, token)
            # An object unchanged since the last list stays the cached one, and the fresh copy is
            # dropped page by page: a relist of 50,000 Secrets then costs one page, not a second cache.
            for key, obj in page:
                before = self._items.get(key)
                items.append((key, before if before is not None and _version(before) == _version(obj) >= 0 else obj))
            token = meta.get("continue")
            if not token:
                break
        self._replace(items)
        self._position = _version({"metadata": meta})
        self.relists += 1
        self.synced.set()
        return meta.get("resourceVersion") or ""

    def _fetch_page(self, token: str | None,
                    _request_timeout: float) -> tuple[list[tuple[Key, JsonObject]], JsonObject]:
        """Worker thread: one page, decoded and transformed off the event loop (50k Secrets take ~1 s)."""
        paging = {"_continue": token} if token else {}
        response = self._list_call(*self._args, limit=self._page_size, _preload_content=False,
                                   _request_timeout=_request_timeout, **paging, **self._selectors)
        page = json.loads(response.data)
        objects = [self._transform(raw) for raw in page.get("items") or []]
        return [(object_key(obj), obj) for obj in objects], page.get("metadata") or {}

    def _replace(self, items: list[tuple[Key, JsonObject]]) -> None:
        fresh = dict(items)
        old, self._items = self._items, fresh
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj, None)
            elif _version(before) != _version(obj):
                self._emit("MODIFIED", obj, before)
        for key, before in old.items():
            if key not in fresh:
                self._emit("DELETED", None, before)

    # ---- watch

    async def _watch_once(self, rv: str) -> str:
        loop = asyncio.get_running_loop()
        started = time.monotonic()

        def deliver(kind: str, obj: JsonObject) -> None:
            loop.call_soon_threadsafe(self._watched, kind, obj)

        last = await self._client.stream(functools.partial(self._stream, rv, deliver))
        if last == rv and time.monotonic() - started < 1.0 and not self._stopping:
            # A stream closed at once with nothing in it (a proxy, an overloaded server):
            # do not turn that into a reconnect loop.
            await asyncio.sleep(self._backoff[0])
        return last

    def _stream(self, rv: str, deliver: Callable[[str, JsonObject], None]) -> str:
        """Worker thread: one watch request, read to its end; returns the last resourceVersion."""
        response = self._list_call(
            *self._args, watch=True, resource_version=rv, allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout, _preload_content=False,
            # The read timeout outlasts the server-side timeout: a silent stream past it is dead.
            _request_timeout=(self._client.request_timeout, self._watch_timeout + 30),
            **self._selectors)
        self._response = response
        try:
            if self._stopping:  # stop() ran before the response existed to be shut down
                return rv
            for line in _lines(response):
                if self._stopping:
                    break
                rv = self._event(json.loads(line), deliver) or rv
        except urllib3.exceptions.HTTPError:
            # Cut mid-stream (an apiserver rolling restart, a proxy's idle timeout): everything
            # up to rv was applied, so resume from there instead of relisting the world.
            if not self._stopping:  # stop() shuts the socket down on purpose
                log.info("watch stream broke; resuming", extra={"informer": self.name})
        finally:
            self._response = None
            response.close()
            response.release_conn()
        return rv

    def _event(self, event: JsonObject, deliver: Callable[[str, JsonObject], None]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired(obj.get("message") or "resource version too old")
            raise WatchFailed(f"watch error {obj.get('code')} {obj.get('reason')}")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            deliver(kind, self._transform(obj))
        return (obj.get("metadata") or {}).get("resourceVersion")

    def _watched(self, kind: str, obj: JsonObject) -> None:
        self._position = max(self._position, _version(obj))
        self._apply(kind, obj)

    def _apply(self, kind: str, obj: JsonObject) -> None:
        key = object_key(obj)
        before = self._items.get(key)
        if before is not None and _version(before) >= _version(obj) >= 0:
            return  # already have this version or a newer one (our own write, observed early)
        if kind == "DELETED":
            if before is not None:
                del self._items[key]
                self._emit("DELETED", None, before)
            return
        self._items[key] = obj
        self._emit("ADDED" if before is None else "MODIFIED", obj, before)

    def _emit(self, kind: str, new: JsonObject | None, old: JsonObject | None) -> None:
        for listener in self._listeners:
            try:
                listener(kind, new, old)
            except Exception:  # one broken listener must not stop the cache
                log.exception("informer listener failed", extra={"informer": self.name})


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
        # Dropped before waiting on the next chunk: a burst's chunk can hold hundreds of events,
        # and an idle watch would otherwise keep all of them alive until the next one.
        del complete

