"""Ensure a fresh pull Secret per matched registry in a namespace, within a time budget.

Concurrent admissions needing the same Secret share one ensure (single-flight). Work that
runs past the admission budget goes on in the background; the Pod is answered anyway, with
a warning: an unreachable cloud or API server must never be why a Pod fails to start.

Its ensures are not authoritative: a managed Secret for the same url that is still fresh is
kept even when it holds another replica's token or an older credential; replacing what merely
differs is the leader's refresher's job (see ``pullsecrets``), so replicas never fight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from prometheus_client import Counter

from webhook.credentialcache import CredentialCache
from webhook.expiring import Expiring
from webhook.jsontypes import JsonObject
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable
from webhook.pullsecrets import (
    Ensured,
    NamespaceGone,
    SecretWriteError,
    build_pull_secret,
)
from webhook.registries import Registry
from webhook.secretwriter import SecretWriter
from webhook.writepolicy import is_current

log = logging.getLogger(__name__)

_UNAVAILABLE = "credentials for registry {} are unavailable"

# Retry schedule for a pull Secret whose write failed during admission (about 5 minutes).
REPAIR_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 60.0, 60.0, 60.0)
# The warm path's built Secrets remembered: the most recently used namespaces and registries,
# each until it has gone unused this long (namespaces come and go).
_BUILT_MAX = 4096
_BUILT_IDLE_SECONDS = 600.0
# Repairs running at most: past it, a failed write waits for its namespace's next Pod.
_REPAIRS_MAX = 1024


class Provisioned(NamedTuple):  # a tuple: a third of a frozen dataclass's cost to build, per registry
    registry: Registry
    reference: bool  # add this registry's Secret to the Pod's imagePullSecrets
    warning: str | None = None


class _Built:
    """The pull Secret built for a namespace and registry, from these registry and credential
    objects; ``kept``: the stored Secret last found current against it."""
    __slots__ = ("registry", "credential", "secret", "name", "kept", "warm")

    def __init__(self, registry: Registry, credential: Credential, secret: JsonObject):
        self.registry, self.credential, self.secret = registry, credential, secret
        self.name: str = secret["metadata"]["name"]
        self.kept: JsonObject | None = None
        self.warm = Provisioned(registry, True)  # the warm path's answer, built once


class Provisioner:
    def __init__(self, tokens: CredentialCache, store: SecretWriter, metrics: Metrics, *, budget_seconds: float = 3.0,
                 clock: Callable[[], float] = time.monotonic, repair_delays: tuple[float, ...] = REPAIR_DELAYS):
        self._tokens = tokens
        self._repair_delays = repair_delays
        self._store = store
        self._metrics = metrics
        self._budget = budget_seconds
        self._inflight: dict[tuple[str, str, bool], asyncio.Task[Ensured]] = {}
        self._writes: dict[tuple[str, str], Counter] = {}  # (registry id, outcome): labels() costs ~6 us a call
        self._repairs: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._built: Expiring[tuple[str, str], _Built] = Expiring(_BUILT_IDLE_SECONDS, _BUILT_MAX, sliding=True,
                                                                  clock=clock)

    async def aclose(self) -> None:
        """Cancel the repairs and the admissions' writes still running (the API client closes
        next); the process is stopping, and a restarted replica or the next Pod redoes them."""
        tasks = [*self._repairs.values(), *self._inflight.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def provision(self, namespace: str, registries: list[Registry], *, dry_run: bool) -> list[Provisioned]:
        answers: list[Provisioned | None] = [self._settled(namespace, registry) for registry in registries]
        if None not in answers:
            return answers  # type: ignore[return-value]  # all warm: no task, no wait
        slow = [index for index, answer in enumerate(answers) if answer is None]
        tasks = [self._shared(namespace, registries[index], dry_run) for index in slow]
        done, _ = await asyncio.wait(tasks, timeout=self._budget)
        for index, task in zip(slow, tasks, strict=True):
            answers[index] = self._result(registries[index], task) if task in done else self._late(registries[index])
        return answers  # type: ignore[return-value]

    def _settled(self, namespace: str, registry: Registry) -> Provisioned | None:
        """The warm path, from memory and without awaiting: a cached credential still handed out
        (one due for refresh starts its refresh ahead, unwaited), and a stored Secret the store
        would keep. No task, no timer, and no await that would hand the event loop to other
        connections in the middle of this admission (under 16 connections that alone made an
        admission 10x slower than at one)."""
        credential = self._tokens.current(registry)
        if credential is None:
            return None  # nothing usable cached: the slow path's tokens.get() mints
        built = self._build(namespace, registry, credential)
        stored = self._store.cached(namespace, built.name)
        if stored is None:
            return None
        if stored is not built.kept:
            if not self._store.settled(built.secret):
                return None
            # Stored objects are replaced, never changed in place, so a Secret found current
            # stays current while it is the same object. A kept rival (may_keep) is not
            # remembered: whether it is fresh enough depends on the time.
            built.kept = stored if is_current(stored, built.secret) else None
        self._count(registry.id, "unchanged")
        return built.warm

    def _count(self, registry_id: str, outcome: str) -> None:
        counter = self._writes.get((registry_id, outcome))
        if counter is None:
            counter = self._writes[registry_id, outcome] = self._metrics.pull_secret_writes.labels(registry_id, outcome)
        counter.inc()

    def _desired(self, namespace: str, registry: Registry, credential: Credential) -> JsonObject:
        return self._build(namespace, registry, credential).secret

    def _build(self, namespace: str, registry: Registry, credential: Credential) -> _Built:
        """``build_pull_secret``, remembered while the registry and credential are the same
        objects: every admission in a namespace asks about the same Secret. Read only: the
        stores compare it, send it, or keep it as it is."""
        key = (namespace, registry.id)
        built = self._built.get(key)
        if built is not None and built.registry is registry and built.credential is credential:
            return built
        built = _Built(registry, credential, build_pull_secret(registry, credential, namespace))
        self._built.set(key, built)
        return built

    def _shared(self, namespace: str, registry: Registry, dry_run: bool) -> asyncio.Task[Ensured]:
        key = (namespace, registry.id, dry_run)
        task = self._inflight.get(key)
        if task is None:
            # With the credential at hand the store's write task starts now, not after this
            # task's first step (a loop iteration under a burst); otherwise the task mints first.
            credential = self._tokens.current(registry)
            started = None if credential is None else self._store.ensure(
                self._desired(namespace, registry, credential), dry_run=dry_run, urgent=True)
            task = asyncio.get_running_loop().create_task(self._ensure(namespace, registry, dry_run, started))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: tuple[str, str, bool], task: asyncio.Task[Ensured]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here so work that outlived its admission is not reported as lost

    async def _ensure(self, namespace: str, registry: Registry, dry_run: bool, started: Awaitable[Ensured] | None
                      ) -> Ensured:
        try:
            if started is None:
                credential = await self._tokens.get(registry)
                started = self._store.ensure(self._desired(namespace, registry, credential), dry_run=dry_run,
                                             urgent=True)
            ensured = await started
        except SecretWriteError as exc:
            self._count(registry.id, "failed")
            if not dry_run and not isinstance(exc, NamespaceGone):
                self._schedule_repair(namespace, registry)
            raise
        self._count(registry.id, ensured.outcome)
        if ensured.outcome == "conflict":
            self._metrics.pull_secret_conflicts.labels(registry.id).inc()
        return ensured

    def _schedule_repair(self, namespace: str, registry: Registry) -> None:
        """Retry a failed write in the background: the Pod already references the Secret.

        The refresher only walks Secrets that exist, so a Secret whose first write failed is
        repaired here, with backoff, until it lands or the attempts run out.
        """
        key = (namespace, registry.id)
        if key in self._repairs:
            return
        if len(self._repairs) >= _REPAIRS_MAX:
            log.warning("too many pull Secret repairs running; not repairing this one", extra={"registry": registry.id})
            return
        self._repairs[key] = asyncio.get_running_loop().create_task(self._repair(namespace, registry))
        self._repairs[key].add_done_callback(lambda _: self._repairs.pop(key, None))

    async def _repair(self, namespace: str, registry: Registry) -> None:
        for delay in self._repair_delays:
            await asyncio.sleep(delay)
            try:
                credential = await self._tokens.get(registry)
                ensured = await self._store.ensure(self._desired(namespace, registry, credential))
            except NamespaceGone:  # deleted, or being deleted, meanwhile: nothing left to repair
                log.info("pull Secret repair abandoned: its namespace is gone", extra={"registry": registry.id})
                return
            except (SecretWriteError, CredentialUnavailable):
                continue
            self._count(registry.id, ensured.outcome)
            log.info("pull Secret repaired", extra={"registry": registry.id, "outcome": ensured.outcome})
            return
        log.error("pull Secret could not be repaired", extra={"registry": registry.id})

    def _result(self, registry: Registry, task: asyncio.Task[Ensured]) -> Provisioned:
        error = task.exception()
        if error is None:
            if task.result().outcome == "conflict":
                log.warning("a Secret named like ours exists and is not managed by regcred; left untouched",
                            extra={"registry": registry.id, "secret": registry.secret_name})
                # The warning is an outage's: anyone may forge a dry run, and whether a foreign
                # Secret exists in a namespace is not theirs to learn. The log says which.
                return self._warn(registry, False, "conflict", _UNAVAILABLE.format(registry.id))
            return Provisioned(registry, True)
        if isinstance(error, CredentialUnavailable):
            self._metrics.registry_unavailable.labels(registry.id).inc()
            log.warning("credentials unavailable", extra={"registry": registry.id, "reason": str(error)})
            return self._warn(registry, False, "unavailable", _UNAVAILABLE.format(registry.id))
        if isinstance(error, SecretWriteError):
            log.warning("pull Secret write failed", extra={"registry": registry.id, "reason": str(error)})
            # Reference it anyway: the refresher repairs the Secret and kubelet retries pulls.
            return self._warn(registry, True, "write_failed", f"could not write {registry.secret_name}; will retry")
        log.error("pull Secret provisioning failed", extra={"registry": registry.id, "error": type(error).__name__})
        return self._warn(registry, False, "internal", f"internal error preparing registry {registry.id}")

    def _late(self, registry: Registry) -> Provisioned:
        log.warning("pull Secret not ready within the admission budget", extra={"registry": registry.id})
        return self._warn(registry, True, "timeout", f"{registry.secret_name} is still being prepared")

    def _warn(self, registry: Registry, reference: bool, reason: str, text: str) -> Provisioned:
        self._metrics.admission_warnings.labels(reason).inc()
        return Provisioned(registry, reference, f"regcred: {text}"[:120])
