"""Change history and watch fan-out for the fake API server (test fixture only).

Like etcd plus the apiserver's watch cache: every write is one ``Change`` with a
new global resourceVersion, kept in a bounded history. A watch from a version
older than that history gets an ERROR event carrying a 410 ``Expired`` Status.

Quirks reproduced (from the apiserver's cacher):

* A label/field-selected watch sees an object that starts matching as ``ADDED``
  and one that stops matching as ``DELETED`` (with its previous content, stamped
  with the new resourceVersion), not as ``MODIFIED``.
* A ``DELETED`` event's object carries the resourceVersion of the deletion.
* Watch events include ``kind``/``apiVersion``; list items do not.

Objects are stored as an ``Entry``: a dict that is never mutated once stored plus its
JSON encoding, so list/get/watch join bytes instead of re-encoding thousands of objects.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass

from .apiserver_errors import expired
from .apiserver_resources import ResourceType
from .apiserver_selectors import Predicate

Key = tuple[str, str]


def dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Entry:
    obj: dict
    raw: bytes

    @property
    def rv(self) -> int:
        return int(self.obj["metadata"]["resourceVersion"])


@dataclass(frozen=True, slots=True)
class Change:
    rv: int
    store_key: str
    key: Key
    type: str
    entry: Entry
    prev: Entry | None


def with_rv(entry: Entry, rv: int) -> Entry:
    obj = {**entry.obj, "metadata": {**entry.obj["metadata"], "resourceVersion": str(rv)}}
    return Entry(obj, dumps(obj))


def list_item(rtype: ResourceType, entry: Entry) -> bytes:
    if rtype.from_storage is None:
        return entry.raw
    return dumps(rtype.from_storage(entry.obj))


def render(rtype: ResourceType, entry: Entry) -> bytes:
    """The object as GET and watch return it: list item bytes plus kind and apiVersion."""
    return rtype.type_prefix + list_item(rtype, entry)[1:]


def event_line(kind: str, rtype: ResourceType, entry: Entry) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + render(rtype, entry) + b"}\n"


def bookmark_line(rtype: ResourceType, rv: int) -> bytes:
    obj = {"kind": rtype.kind, "apiVersion": rtype.api_version,
           "metadata": {"resourceVersion": str(rv)}}
    return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"


class Watcher:
    """One open watch: its filter and the queue its HTTP stream drains."""

    def __init__(self, rtype: ResourceType, namespace: str | None,
                 predicate: Predicate | None, loop: asyncio.AbstractEventLoop):
        self.rtype = rtype
        self.namespace = namespace
        self.predicate = predicate
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def selects(self, key: Key, entry: Entry | None) -> bool:
        if entry is None or (self.namespace and key[0] != self.namespace):
            return False
        return self.predicate is None or self.predicate(entry.obj)

    def line_for(self, change: Change) -> bytes | None:
        now = change.type != "DELETED" and self.selects(change.key, change.entry)
        before = self.selects(change.key, change.prev)
        if now:
            return event_line("MODIFIED" if before else "ADDED", self.rtype, change.entry)
        if not before:
            return None
        if change.type == "DELETED":
            return event_line("DELETED", self.rtype, change.entry)
        return event_line("DELETED", self.rtype, with_rv(change.prev, change.rv))

    def push(self, item: bytes | None) -> None:
        """Thread-safe enqueue; ``None`` ends the stream."""
        if self.closed:
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the server's loop is already closed
            self.closed = True
        if item is None:
            self.closed = True


class WatchHub:
    """History of changes and the set of open watches; callers hold the store lock."""

    def __init__(self, history_size: int, initial_rv: int):
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history: deque[Change] = deque(maxlen=history_size)
        self.compacted_rv = initial_rv
        self._watchers: dict[str, set[Watcher]] = {}

    def publish(self, change: Change) -> None:
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv
        self.history.append(change)
        for watcher in self._watchers.get(change.store_key, ()):
            line = watcher.line_for(change)
            if line is not None:
                watcher.push(line)

    def since(self, rv: int) -> list[Change]:
        """Every change after ``rv``; 410 Expired if some were already compacted away."""
        if rv < self.compacted_rv:
            raise expired(f"too old resource version: {rv} ({self.compacted_rv + 1})")
        return [change for change in self.history if change.rv > rv]

    def state_at(self, store_key: str, rv: int) -> dict[Key, Entry | None]:
        """For every key changed after ``rv``: its entry as of ``rv`` (None if absent then)."""
        overrides: dict[Key, Entry | None] = {}
        for change in self.since(rv):
            if change.store_key == store_key:
                overrides.setdefault(change.key, change.prev)
        return overrides

    def add(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.rtype.store_key, set()).add(watcher)

    def remove(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.rtype.store_key, set()).discard(watcher)

    def count(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())

    def expire_all(self, current_rv: int) -> int:
        """Compact the history up to ``current_rv`` and end every watch with an ERROR event
        carrying a 410 Expired Status, as an apiserver does when a watcher fell behind its
        watch cache or etcd compacted: a client must relist. Returns how many were ended."""
        self.history.clear()
        self.compacted_rv = current_rv
        error = expired(f"too old resource version: watch cache compacted at {current_rv}")
        line = b'{"type":"ERROR","object":' + dumps(error.status) + b"}\n"
        ended = 0
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.push(line)
                watcher.push(None)
                ended += 1
            watchers.clear()
        return ended

    def close_all(self) -> int:
        closed = 0
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.push(None)
                closed += 1
            watchers.clear()
        return closed
