"""Per-resource sorted index and list pagination for the fake API server (test fixture only).

etcd lists keys in byte order (``/registry/secrets/<namespace>/<name>``), so lists come back
sorted by namespace then name, and a ``continue`` token is "the resourceVersion of the
first page plus the last key returned". The index keeps a dict for O(1) get and a sorted
key list for O(log n + page) ranges; callers hold the store lock.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass

from .apiserver_errors import bad_request
from .apiserver_resources import ResourceType
from .apiserver_selectors import Predicate
from .apiserver_watch import Entry, Key

# What to show for keys changed since the page's snapshot: their entry then (None: absent).
Overrides = dict[Key, Entry | None]


@dataclass(frozen=True)
class ListPage:
    items: list[Entry]
    rv: int
    continue_token: str | None
    remaining: int | None


class Index:
    def __init__(self) -> None:
        self.objects: dict[Key, Entry] = {}
        self._keys: list[Key] = []

    def put(self, key: Key, entry: Entry) -> None:
        if key not in self.objects:
            bisect.insort(self._keys, key)
        self.objects[key] = entry

    def remove(self, key: Key) -> None:
        del self.objects[key]
        del self._keys[bisect.bisect_left(self._keys, key)]

    def keys_in(self, namespace: str | None) -> list[Key]:
        lo, hi = self._bounds(namespace, None)
        return self._keys[lo:hi]

    def _bounds(self, namespace: str | None, start: Key | None) -> tuple[int, int]:
        lo, hi = 0, len(self._keys)
        if namespace:
            lo = bisect.bisect_left(self._keys, (namespace, ""))
            hi = bisect.bisect_left(self._keys, (namespace + "\x00", ""))
        if start is not None:
            lo = max(lo, bisect.bisect_right(self._keys, start))
        return lo, hi

    def _candidates(self, namespace: str | None, start: Key | None,
                    overrides: Overrides) -> Iterator[Key]:
        """Keys after ``start``: the current ones merged with those deleted since the snapshot."""
        lo, hi = self._bounds(namespace, start)
        current = (self._keys[i] for i in range(lo, hi))
        extra = sorted(k for k in overrides if _in_range(k, namespace, start))
        previous = None
        for key in heapq.merge(current, extra):
            if key != previous:
                yield key
            previous = key

    def page(self, namespace: str | None, predicate: Predicate | None, limit: int | None,
             start: Key | None, overrides: Overrides) -> tuple[list[Entry], Key | None, bool]:
        """Up to ``limit`` matching entries after ``start``, the last key, and if more exist."""
        items: list[Entry] = []
        last = None
        for key in self._candidates(namespace, start, overrides):
            entry = overrides[key] if key in overrides else self.objects[key]
            if entry is None:
                continue
            if limit and len(items) >= limit:
                return items, last, True
            if predicate is None or predicate(entry.obj):
                items.append(entry)
                last = key
        return items, last, False

    def remaining(self, namespace: str | None, last: Key, overrides: Overrides) -> int:
        lo, hi = self._bounds(namespace, last)
        return hi - lo + sum((entry is not None) - (key in self.objects)
                             for key, entry in overrides.items()
                             if _in_range(key, namespace, last))


def _in_range(key: Key, namespace: str | None, start: Key | None) -> bool:
    return (not namespace or key[0] == namespace) and (start is None or key > start)


def encode_continue(rv: int, key: Key, rtype: ResourceType) -> str:
    start = f"{key[0]}/{key[1]}" if rtype.namespaced else key[1]
    token = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"})
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def decode_continue(token: str, rtype: ResourceType) -> tuple[int, Key]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        start = data["start"].rstrip("\x00")
        key = tuple(start.split("/", 1)) if rtype.namespaced else ("", start)
        if data["v"] != "meta.k8s.io/v1" or len(key) != 2:
            raise ValueError(start)
        return int(data["rv"]), key  # type: ignore[return-value]
    except (ValueError, KeyError, TypeError) as error:
        raise bad_request(f"continue key is not valid: {error}") from None
