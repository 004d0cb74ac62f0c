"""The refresher: one background loop keeping every managed pull Secret fresh, on the leader only.

Each pass (``run_once``) walks the managed Secrets in the store's watch-fed cache:

* a Secret of a registry that left the list is deleted (``prune``). Before any valid registry
  list was loaded nothing is pruned: an unread ConfigMap must never wipe the cluster's Secrets;
* a Secret in a namespace that no longer qualifies for its registry (``namespaces`` edited,
  namespace labels changed so ``namespaceSelector`` no longer matches, or the namespace now
  labelled ``regcred.io/inject=disabled``) is deleted: "revoked".
  This is not subject to ``prune``: keeping credentials where they are no longer allowed is
  the leak tenancy exists to stop. Selectors are only evaluated on labels the namespace cache
  knows (``namespace_labels`` returns None otherwise), so an unsynced cache revokes nothing;
* every other one is rebuilt from ``tokens.get(registry)`` and written when it differs from
  the cached one. The token cache decides when to re-mint (2/3 of the credential's life); a
  changed credentials Secret invalidates the cached token (``material_changed``); a changed
  url changes the dockerconfigjson key. All three surface as "differs", so one rule covers them.

Writes go through the store, so they share the client rate limit; a few run concurrently so a
slow write does not hold up the rest. Only Secrets with the managed-by label are ever touched:
the store's cache holds nothing else, and the store checks the label again before writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from webhook.credentialcache import CredentialCache
from webhook.jsontypes import JsonObject
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable
from webhook.pullsecrets import (
    REGISTRY_LABEL,
    Ensured,
    SecretWriteError,
    build_pull_secret,
)
from webhook.registries import Registry, RegistryList
from webhook.tenancy import refusal
from webhook.writepolicy import is_current

log = logging.getLogger(__name__)

# After a pass that started a refresh-ahead mint, look again soon rather than a whole interval
# later: the pass used the old credential while the new one was being minted.
_SOON = 5.0
# A current Secret costs a pass no await, so a pass over 50k of them would hold the event loop
# (and every admission waiting on it) for a second: give way this often.
_YIELD_EVERY = 256


class ManagedSecretStore(Protocol):
    def managed(self) -> Iterable[JsonObject]: ...

    def ensure(self, desired: JsonObject, *, dry_run: bool = False,
               authoritative: bool = False) -> Awaitable[Ensured]: ...

    async def delete(self, namespace: str, name: str) -> bool: ...


@dataclass(frozen=True)
class _Work:
    secret: JsonObject
    registry: Registry | None  # None: delete the Secret
    reason: str = ""  # why it is deleted: "removed" (registry left the list) or "revoked"


@dataclass
class RefreshReport:
    skipped: str | None = None  # why nothing was done: "not leader", "no registry list"
    checked: int = 0
    operations: Counter[str] = field(default_factory=Counter)  # created, updated, deleted, revoked, conflict, failed
    unavailable: list[str] = field(default_factory=list)  # registries whose credentials could not be had
    minting: list[str] = field(default_factory=list)  # registries with a refresh-ahead mint under way
    aborted: bool = False  # leadership was lost part-way

    @property
    def ok(self) -> bool:
        return not (self.operations["failed"] or self.unavailable or self.aborted)


class Refresher:
    def __init__(self, *, registries: Callable[[], RegistryList | None], tokens: CredentialCache,
                 store: ManagedSecretStore, metrics: Metrics, is_leader: Callable[[], bool] = lambda: True,
                 prune: bool = True, interval: float = 60.0, concurrency: int = 4,
                 namespace_labels: Callable[[str], dict[str, str] | None] = lambda namespace: None,
                 clock: Callable[[], float] = time.time):
        self._registries = registries
        self._tokens = tokens
        self._store = store
        self._metrics = metrics
        self._is_leader = is_leader
        self._prune = prune
        self._interval = interval
        self._concurrency = concurrency
        self._namespace_labels = namespace_labels
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next pass now (a credential, the registry list or leadership changed)."""
        self._wake.set()

    def material_changed(self, secret_name: str) -> None:
        """A credentials Secret changed: drop tokens minted from it, then rewrite (every replica)."""
        registries = self._registries()
        for registry in registries.registries if registries else ():
            if registry.secret_ref == secret_name:
                self._tokens.invalidate(registry.id)
                log.info("credentials changed; refreshing", extra={"registry": registry.id, "secret": secret_name})
        self.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set; passes do nothing while not leader."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except Exception:  # a bug in one pass must not end refreshing for good
                log.exception("refresh pass failed")
                report = RefreshReport()
            await self._pause(stop, _SOON if report.minting else self._interval)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        self._wake.clear()

    async def run_once(self) -> RefreshReport:
        """One pass over the managed Secrets; returns what it did."""
        registries = self._registries()
        skipped = "not leader" if not self._is_leader() else ("no registry list" if registries is None else None)
        if skipped or registries is None:
            self._metrics.refresh_runs.labels("skipped").inc()
            return RefreshReport(skipped=skipped)
        started = time.perf_counter()
        report = RefreshReport()
        by_id = {registry.id: registry for registry in registries.registries}
        work = await self._plan(by_id, report)
        needed = {item.registry.id for item in work if item.registry}
        credentials = await self._credentials(needed, by_id, report)
        items = iter(work)
        await asyncio.gather(*(self._worker(items, credentials, report) for _ in range(self._concurrency)))
        self._finish(report, time.perf_counter() - started)
        return report

    async def _plan(self, by_id: dict[str, Registry], report: RefreshReport) -> list[_Work]:
        """What to do with every managed Secret worth looking at."""
        work = []
        for secret in self._store.managed():
            report.checked += 1
            if report.checked % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            meta = secret.get("metadata") or {}
            registry_id = (meta.get("labels") or {}).get(REGISTRY_LABEL)
            if not registry_id:
                continue  # labelled managed but without a registry: not something we can rebuild
            registry = by_id.get(registry_id)
            if registry is None:
                if self._prune:
                    work.append(_Work(secret, None, "removed"))
            elif meta.get("name") == registry.secret_name:
                namespace = meta.get("namespace", "")
                if refusal(registry, namespace, self._namespace_labels(namespace)) is not None:
                    work.append(_Work(secret, None, "revoked"))
                else:
                    work.append(_Work(secret, registry))
        return work

    async def _credentials(self, needed: set[str], by_id: dict[str, Registry],
                           report: RefreshReport) -> dict[str, Credential]:
        """A credential for every listed registry, not only those with Secrets to check: the
        start-up pass then mints them all, and refresh-ahead keeps them warm, so the first Pods
        of a new namespace do not wait on a mint (boto3's first call alone takes ~1 s). Only a
        registry with Secrets to refresh makes the pass count as failed."""
        credentials = {}
        for registry_id in sorted(by_id):
            registry = by_id[registry_id]
            try:
                credentials[registry_id] = await self._tokens.get(registry)
            except CredentialUnavailable as exc:
                if registry_id not in needed:
                    continue  # the token cache has logged and counted it; nothing here depended on it
                report.unavailable.append(registry_id)
                log.warning("refresh skipped a registry: credentials unavailable",
                            extra={"registry": registry_id, "reason": str(exc)})
                continue
            if self._tokens.due_for_refresh(registry):
                report.minting.append(registry_id)
        return credentials

    async def _worker(self, items: Iterator[_Work], credentials: dict[str, Credential], report: RefreshReport) -> None:
        for taken, item in enumerate(items, 1):  # one shared iterator: each Secret is taken by one worker
            if taken % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if not self._is_leader():
                report.aborted = True
                return
            if item.registry is not None and item.registry.id not in credentials:
                continue
            operation = await self._refresh_one(item, credentials)
            if operation is not None:
                report.operations[operation] += 1
                label = item.secret["metadata"]["labels"][REGISTRY_LABEL]
                self._metrics.refresh_secret_writes.labels(label, operation).inc()

    async def _refresh_one(self, item: _Work, credentials: dict[str, Credential]) -> str | None:
        secret, registry = item.secret, item.registry
        namespace, name = secret["metadata"].get("namespace", ""), secret["metadata"]["name"]
        try:
            if registry is None:
                return await self._delete(item, namespace, name)
            desired = build_pull_secret(registry, credentials[registry.id], namespace)
            if is_current(secret, desired):
                return None
            outcome = (await self._store.ensure(desired, authoritative=True)).outcome
        except SecretWriteError as exc:
            log.warning("refresh write failed",
                        extra={"registry": secret["metadata"]["labels"][REGISTRY_LABEL], "reason": str(exc)})
            return "failed"
        return outcome if outcome in ("created", "updated", "conflict") else None

    async def _delete(self, item: _Work, namespace: str, name: str) -> str | None:
        if not await self._store.delete(namespace, name):
            return None
        registry_id = item.secret["metadata"]["labels"][REGISTRY_LABEL]
        if item.reason == "revoked":
            log.info("revoked a pull Secret: the namespace no longer qualifies for the registry",
                     extra={"namespace": namespace, "secret": name, "registry": registry_id})
            return "revoked"
        log.info("pruned the pull Secret of a removed registry",
                 extra={"namespace": namespace, "secret": name, "registry": registry_id})
        return "deleted"

    def _finish(self, report: RefreshReport, seconds: float) -> None:
        self._metrics.refresh_duration.observe(seconds)
        self._metrics.refresh_runs.labels("ok" if report.ok else "errors").inc()
        if report.ok:
            self._metrics.refresh_last_success.set(self._clock())
        log.info("refresh pass done", extra={
            "checked": report.checked, "seconds": round(seconds, 3), "operations": dict(report.operations),
            "unavailable": report.unavailable, "aborted": report.aborted})
