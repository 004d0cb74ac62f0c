"""What the watch-fed caches share: the interface they read (``WatchCache``), their lifecycle
and readiness (``InformerCache``), and one object per distinct cached value (``Shared``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from webhook.jsontypes import JsonObject

Listener = Callable[[str, "JsonObject | None", "JsonObject | None"], None]


class WatchCache(Protocol):
    """What the caches read and drive: an ``Informer``, or ``NamedInformers`` (one per name)."""

    synced: asyncio.Event

    def get(self, namespace: str | None, name: str) -> JsonObject | None: ...
    def values(self) -> list[JsonObject]: ...
    def observe(self, obj: JsonObject) -> None: ...
    def forget(self, namespace: str, name: str) -> None: ...
    def subscribe(self, listener: Listener) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


class InformerCache:
    """What every cache built on one Informer shares: its lifecycle and readiness."""

    _informer: WatchCache

    @property
    def synced(self) -> asyncio.Event:
        """Set once the first list is cached (a readiness condition)."""
        return self._informer.synced

    def start(self) -> None:
        self._informer.start()

    async def stop(self) -> None:
        await self._informer.stop()


class Shared:
    """One object per distinct value among many cached ones: a transform's helper.

    Cached objects are read-only by contract, so equal strings and flat string dicts can be
    one object: the 10,000 namespaces' copies of one registry's pull Secret carry the same
    labels and data, and the JSON decoder makes a fresh copy of each for every Secret. Bounded:
    past ``limit`` distinct values the table starts over (objects already shared stay so).
    Safe from several threads: one dict operation per call.
    """

    def __init__(self, limit: int = 4096):
        self._values: dict[object, object] = {}
        self._limit = limit

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            key: object = value
        elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            key = tuple(value.items())  # the API server writes keys sorted, so order is stable
        else:
            return value
        if len(self._values) >= self._limit:
            self._values = {}
        return self._values.setdefault(key, value)
