"""One watch per object name: the only shape of list and watch that RBAC ``resourceNames`` allows.

RBAC authorises a ``list`` or ``watch`` restricted by ``resourceNames`` only when the request
carries a ``metadata.name=<name>`` field selector (the request then names its object). A
label-selected watch of every managed Secret would need ``list secrets`` on the whole
cluster: every service-account token and TLS key. So regcred keeps one field-selected
``Informer`` per name it manages (``regcred-<id>`` across namespaces; ``secretRef`` names in
its own namespace), and ``NamedInformers`` puts them behind the one Informer's interface the
caches already use (get, values, observe, forget, subscribe, synced). The cache then holds
managed objects only, never the rest of a namespace's Secrets.

The names follow the registry list (``set_names``): a new registry gets its watch, and a
registry that left keeps its watch while the watch still holds Secrets, so the refresher can
prune them, and is retired once it holds none.

A watch the API server refuses (a registry added outside Helm, whose Secret the chart's
``resourceNames`` do not cover) is reported once through ``on_forbidden(name, permission)`` and
counts as synced: readiness does not wait on it, every other name keeps its watch, and the
refused one keeps retrying with the Informer's backoff, so a fixed role heals it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from webhook.jsontypes import JsonObject
from webhook.kube.caches import Listener
from webhook.kube.informer import Informer, object_key
from webhook.kube.permissions import MissingPermission, missing_permission

log = logging.getLogger(__name__)

ForbiddenCallback = Callable[[str, MissingPermission], None]


class NamedInformers:
    def __init__(self, make: Callable[..., Informer], *, on_forbidden: ForbiddenCallback | None = None):
        """``make(name, on_error=...)`` builds the (unstarted) Informer watching ``name``."""
        self._make = make
        self._on_forbidden = on_forbidden
        self._informers: dict[str, Informer] = {}
        self._wanted: set[str] | None = None  # None until the first set_names: not synced before
        self._forbidden: dict[str, MissingPermission] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.synced = asyncio.Event()

    # ---- the set of names

    def set_names(self, names: Iterable[str]) -> None:
        self._wanted = set(names)
        self._reconcile()

    def names(self) -> set[str]:
        """The names watched now (wanted ones, and retired ones still holding objects)."""
        return set(self._informers)

    def forbidden(self) -> dict[str, MissingPermission]:
        """Names whose watch the API server refuses, with the permission it named."""
        return dict(self._forbidden)

    # ---- the Informer interface

    def get(self, namespace: str | None, name: str) -> JsonObject | None:
        informer = self._informers.get(name)
        return informer.get(namespace, name) if informer is not None else None

    def values(self) -> list[JsonObject]:
        return [obj for informer in list(self._informers.values()) for obj in informer.values()]

    def observe(self, obj: JsonObject) -> None:
        informer = self._informers.get(object_key(obj)[1])
        if informer is not None:  # an object of a name not watched would never be updated: not cached
            informer.observe(obj)

    def forget(self, namespace: str, name: str) -> None:
        informer = self._informers.get(name)
        if informer is not None:
            informer.forget(namespace, name)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._started = True
        self._reconcile()

    async def stop(self) -> None:
        self._started = False
        for task in list(self._tasks):
            task.cancel()
        informers, self._informers = list(self._informers.values()), {}
        await asyncio.gather(*(informer.stop() for informer in informers), *self._tasks, return_exceptions=True)

    # ---- keeping the watches in step

    def _reconcile(self) -> None:
        if not self._started or self._wanted is None:
            return
        for name in sorted(self._wanted - set(self._informers)):
            informer = self._make(name, on_error=lambda exc, name=name: self._failed(name, exc))
            informer.subscribe(functools.partial(self._changed, name))
            self._informers[name] = informer
            informer.start()
            self._follow(name, informer)
        for name in sorted(set(self._informers) - self._wanted):
            informer = self._informers[name]
            if (informer.synced.is_set() or name in self._forbidden) and not informer.values():
                self._retire(name)
        self._check_synced()

    def _retire(self, name: str) -> None:
        informer = self._informers.pop(name)
        self._forbidden.pop(name, None)
        self._spawn(informer.stop())

    def _follow(self, name: str, informer: Informer) -> None:
        async def synced() -> None:
            await informer.synced.wait()
            if self._forbidden.pop(name, None) is not None:
                log.info("watch allowed again", extra={"watch": name})
            self._reconcile()  # a retired name may now be known empty
        self._spawn(synced())

    def _failed(self, name: str, exc: BaseException) -> None:
        missing = missing_permission(exc)
        informer = self._informers.get(name)
        if missing is None or informer is None or name in self._forbidden:
            return
        self._forbidden[name] = missing
        if informer.synced.is_set():  # allowed once, refused now: hear of the next success again
            informer.synced.clear()
            self._follow(name, informer)
        log.error("RBAC does not cover %s: its watch is refused (regcred may not %s); it is skipped, "
                  "everything else carries on", name, missing, extra={"watch": name, "verb": missing.verb})
        if self._on_forbidden is not None:
            self._on_forbidden(name, missing)
        self._reconcile()

    def _check_synced(self) -> None:
        if self._wanted is not None and all(self._informers[name].synced.is_set() or name in self._forbidden
                                            for name in self._wanted if name in self._informers):
            self.synced.set()

    def _changed(self, name: str, kind: str, new: JsonObject | None, old: JsonObject | None) -> None:
        for listener in self._listeners:
            try:
                listener(kind, new, old)
            except Exception:  # one broken listener must not stop the cache
                log.exception("watch listener failed", extra={"watch": name})
        if kind == "DELETED" and self._wanted is not None and name not in self._wanted:
            self._reconcile()  # a retired name's last object pruned: its watch can go

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
