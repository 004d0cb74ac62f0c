"""Making a pull Secret exist: create, read back, replace, single-flight, under one write policy.

The stores (``InMemorySecretStore``, ``KubeSecretStore``) only create, read, replace and
delete. Everything that decides lives here and in ``webhook/writepolicy.py``, so a test on
the in-memory store runs under the rules production runs under.

* create; ``EXISTS`` means someone was first (another replica, a user, a watch event not yet
  seen), so read it back;
* not ours (no managed-by label): never modified, outcome "conflict"; remembered for a while,
  because the cache holds managed Secrets only and every Pod of that namespace would
  otherwise cost a create and a read;
* ours and replaceable (``writepolicy.decide``): replace it carrying the version read, so a
  change made meanwhile answers ``EXISTS``; then read again and retry, a bounded number of
  times.

One write per Secret at a time: concurrent admissions of one namespace share it. A write that
just failed (a quota, an outage) loses the urgent lane for ``failing_ttl`` seconds, so every
Pod admitted in its namespace cannot become an unlimited retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from webhook.expiring import Expiring
from webhook.jsontypes import JsonObject
from webhook.pullsecrets import (
    CREATED,
    EXISTS,
    NOT_FOUND,
    REPLACED,
    Ensured,
    NamespaceGone,
    SecretStore,
    SecretWriteError,
)
from webhook.writepolicy import Decision, decide, is_managed

Key = tuple[str, str]
# Foreign Secrets and failing writes remembered at most (a few MB), each for its ttl.
REMEMBERED_MAX = 10_000


class SecretWriter:
    def __init__(self, store: SecretStore, *, sole_writer: bool = False, attempts: int = 4,
                 foreign_ttl: float = 60.0, failing_ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        """``sole_writer``: no other process writes these Secrets (no cluster): every write is
        authoritative (see webhook/writepolicy.py)."""
        self.store = store
        self._sole_writer = sole_writer
        self._attempts = attempts
        self._wall_clock = wall_clock  # unix seconds, against the expires-at annotations
        # Bounded and swept (namespaces come and go; see webhook/expiring.py).
        self._foreign: Expiring[Key, bool] = Expiring(foreign_ttl, REMEMBERED_MAX, clock=clock)
        self._failing: Expiring[Key, bool] = Expiring(failing_ttl, REMEMBERED_MAX, clock=clock)
        self._inflight: dict[Key, tuple[tuple[JsonObject, bool], asyncio.Task[Ensured]]] = {}
        self._stopping = False

    def cached(self, namespace: str, name: str) -> JsonObject | None:
        # Every admission asks this, also when it writes nothing: the remembered answers of
        # namespaces gone meanwhile expire here too, not only at the next write.
        self._foreign.sweep()
        self._failing.sweep()
        return self.store.cached(namespace, name)

    def managed(self) -> list[JsonObject]:
        return self.store.managed()

    def settled(self, desired: JsonObject) -> bool:
        """True when an admission's ``ensure(desired)`` would answer "unchanged" from memory
        alone: the warm path asks this first, without awaiting."""
        cached = self.store.cached(*_key(desired))
        return cached is not None and self._decide(cached, desired, False) == "unchanged"

    def ensure(self, desired: JsonObject, *, dry_run: bool = False, urgent: bool = False,
               authoritative: bool = False) -> asyncio.Future[Ensured]:
        """Make ``desired`` exist in its namespace, never touching a Secret we do not manage.

        ``urgent``: an admission waits on this write (the store may give it a lane of its own).
        ``authoritative``: replace a managed Secret that differs, even a fresh one (the refresher).
        The write runs in a task, started before this returns; await the future for the outcome.
        """
        key = _key(desired)
        cached = self.store.cached(*key)
        if cached is not None:
            self._foreign.discard(key)  # it carries our label now
            if self._decide(cached, desired, authoritative) == "unchanged":
                return _answered(Ensured("unchanged"))
        elif key in self._foreign:
            return _answered(Ensured("conflict"))
        urgent = urgent and key not in self._failing
        if dry_run:
            return asyncio.ensure_future(self._dry_run(desired, cached, authoritative, urgent))
        return self._single_flight(key, (desired, authoritative), urgent)

    async def delete(self, namespace: str, name: str) -> bool:
        """Delete a managed Secret; True if this call deleted it. Foreign ones are never touched."""
        existing = self.store.cached(namespace, name) or await self.store.read(namespace, name, urgent=False)
        for _ in range(self._attempts):
            if existing is None or not is_managed(existing):
                return False
            result = await self.store.delete(existing)  # exactly the object judged managed
            if result != EXISTS:
                return result != NOT_FOUND
            existing = await self.store.read(namespace, name, urgent=False)
        raise SecretWriteError(f"delete Secret {namespace}/{name}: still conflicting after {self._attempts} attempts")

    async def stop(self) -> None:
        """Cancel the writes in flight and refuse new ones, then stop the store."""
        self._stopping = True
        tasks = [task for _, task in self._inflight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.stop()

    def _decide(self, existing: JsonObject, desired: JsonObject, authoritative: bool) -> Decision:
        return decide(existing, desired, authoritative=authoritative or self._sole_writer, now=self._wall_clock())

    # ---- one write per Secret

    def _single_flight(self, key: Key, wanted: tuple[JsonObject, bool], urgent: bool) -> asyncio.Future[Ensured]:
        # An authoritative ensure shares only an authoritative write: a lenient one may have
        # kept a rival's Secret and answered "unchanged".
        if self._stopping:
            future: asyncio.Future[Ensured] = asyncio.get_running_loop().create_future()
            future.set_exception(SecretWriteError(f"write Secret {key[0]}/{key[1]}: regcred is stopping"))
            return future
        running = self._inflight.get(key)
        if running is not None:
            theirs, task = running
            if theirs == wanted:
                return asyncio.shield(task)
            return asyncio.ensure_future(self._after(task, key, wanted, urgent))
        desired, authoritative = wanted
        existing = self.store.cached(*key)
        task = asyncio.get_running_loop().create_task(self._write(desired, authoritative, urgent, existing))
        self._inflight[key] = (wanted, task)
        task.add_done_callback(lambda done: self._finished(key, done))
        return asyncio.shield(task)

    async def _after(self, task: asyncio.Task[Ensured], key: Key, wanted: tuple[JsonObject, bool],
                     urgent: bool) -> Ensured:
        """Another version is being written; ours goes after it."""
        await asyncio.wait([task])
        return await self._single_flight(key, wanted, urgent)

    def _finished(self, key: Key, task: asyncio.Task[Ensured]) -> None:
        if self._inflight.get(key, (None, None))[1] is task:
            del self._inflight[key]
        # Retrieved even when every caller gave up, so it is not logged as "never retrieved".
        if not task.cancelled() and isinstance(task.exception(), SecretWriteError):
            self._failing.set(key, True)

    async def _write(self, desired: JsonObject, authoritative: bool, urgent: bool,
                     existing: JsonObject | None) -> Ensured:
        namespace, name = key = _key(desired)
        for _ in range(self._attempts):
            if existing is None:
                status = await self.store.create(desired, urgent=urgent)
                if status == CREATED:
                    return Ensured("created")
                if status == NOT_FOUND:  # a create finds nothing else missing: nothing to write, ever
                    raise NamespaceGone(f"create Secret {namespace}/{name}: namespace {namespace} not found")
                existing = await self.store.read(namespace, name, urgent=urgent)
                if existing is None:
                    continue  # deleted between our create and our read
            decision = self._decide(existing, desired, authoritative)
            if decision == "conflict":
                self._foreign.set(key, True)
            if decision != "replace":
                return Ensured(decision)
            status = await self.store.replace(existing, desired, urgent=urgent)
            if status == REPLACED:
                return Ensured("updated")
            existing = None if status == NOT_FOUND else await self.store.read(namespace, name, urgent=urgent)
        raise SecretWriteError(f"write Secret {namespace}/{name}: still conflicting after {self._attempts} attempts")

    async def _dry_run(self, desired: JsonObject, cached: JsonObject | None, authoritative: bool,
                       urgent: bool) -> Ensured:
        # Not cached: absent or foreign (the cluster's cache holds ours only), and only a read tells which.
        existing = cached if cached is not None else await self.store.read(*_key(desired), urgent=urgent)
        if existing is None:
            return Ensured("dry_run")
        decision = self._decide(existing, desired, authoritative)
        return Ensured("dry_run" if decision == "replace" else decision)


def _key(secret: dict[str, Any]) -> Key:
    meta = secret["metadata"]
    return meta["namespace"], meta["name"]


def _answered(outcome: Ensured) -> asyncio.Future[Ensured]:
    future: asyncio.Future[Ensured] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future
