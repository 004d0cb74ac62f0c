"""A table that forgets: entries live ``ttl`` seconds and the table holds at most ``limit``.

What regcred remembers per namespace (a foreign Secret, a failing write, a built pull Secret)
must not grow with namespace churn: a cluster that creates and deletes thousands of
namespaces a day would otherwise keep every one of them. Entries are kept in expiry order,
so each read and write sweeps the expired ones from the front in time proportional to what
it removes, and past ``limit`` the entry nearest its expiry goes first. ``sliding``: a read
renews the entry (least recently used goes first); otherwise it lives ``ttl`` from its write.
Not thread-safe: the event loop's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    def __init__(self, ttl: float, limit: int, *, sliding: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._limit = limit
        self._sliding = sliding
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._peak = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        now = self._clock()
        self._sweep(now)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        if self._sliding:
            self._entries[key] = (now + self._ttl, entry[1])
            self._entries.move_to_end(key)
        return entry[1]

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def set(self, key: K, value: V) -> None:
        now = self._clock()
        self._entries.pop(key, None)
        self._entries[key] = (now + self._ttl, value)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
        self._sweep(now)

    def sweep(self) -> None:
        """Drop the expired entries now, as every read and write does; one check when empty."""
        if self._entries:
            self._sweep(self._clock())

    def _sweep(self, now: float) -> None:
        entries = self._entries
        while entries and next(iter(entries.values()))[0] <= now:
            entries.popitem(last=False)
        if len(entries) * 4 < self._peak:  # a dict never gives back the room its peak took
            self._entries = OrderedDict(entries)
            self._peak = len(entries)
        elif len(entries) > self._peak:
            self._peak = len(entries)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)
