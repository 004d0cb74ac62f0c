"""Per-registry credential cache: expiry, refresh-ahead, single-flight, keep-last-on-failure.

A credential is reused until ``refresh_fraction`` (2/3) of its life has passed; after that
the cached one is still handed out while one background mint replaces it (cert-manager
renews at 2/3 of lifetime for the same reason: a whole third of the life is left to retry).
Concurrent callers share one mint, which runs in a worker thread (boto3 and google-auth
block). If minting fails, the last credential is used until it really expires, and the next
attempt waits out an exponential backoff so an unreachable cloud is never hammered.

A provider can hand back a credential that is already expired, or nearly so (clock skew
between us and the cloud, or a fake like moto answering with a fixed date in 2015). It is
used anyway - the cloud just issued it, so it is the best credential there is - counted as
``outcome="expired"``, logged, and kept until the backoff ends instead of re-minting in a
tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable, MaterialSource, Provider
from webhook.registries import Registry

log = logging.getLogger(__name__)

BACKOFF_MIN = 5.0
BACKOFF_MAX = 300.0
# Less life than this left at mint time and the credential counts as expired on arrival:
# refreshing it at 2/3 of "life" would mean minting again within seconds.
MIN_LIFE = 30.0


@dataclass(slots=True)
class _Entry:
    registry: Registry
    credential: Credential | None = None
    minted_at: float = 0.0
    usable_until: float = 0.0  # handed out before this instant (unix seconds); inf: no expiry
    failures: int = 0  # consecutive failed or expired-on-arrival mints, for the backoff
    retry_at: float = 0.0  # no new mint before this instant
    last_error: str | None = None
    task: asyncio.Task[Credential] | None = None


class CredentialCache:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        material: MaterialSource,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        refresh_fraction: float = 2 / 3,
    ):
        self._providers = providers
        self._material = material
        self._metrics = metrics
        self._clock = clock
        self._fraction = refresh_fraction
        self._entries: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[Credential]] = set()  # strong references: the loop keeps only weak ones

    def peek(self, registry: Registry) -> Credential | None:
        """The cached credential if it is still handed out; never mints, never starts a refresh
        (``/status`` reads it from a worker thread, outside the event loop)."""
        entry = self._cached(registry)
        return entry.credential if entry is not None and self._usable(entry, self._clock()) else None

    def current(self, registry: Registry) -> Credential | None:
        """The cached credential if it is still handed out, as ``get`` would hand it out: when it
        is due for refresh the mint starts ahead, and this caller keeps the current one. Never
        waits: what an admission's warm path uses."""
        entry = self._cached(registry)
        return None if entry is None else self._hand_out(entry, self._clock())

    async def get(self, registry: Registry) -> Credential:
        """A valid credential, from memory when possible. Raises CredentialUnavailable."""
        entry = self._entry(registry)
        now = self._clock()
        credential = self._hand_out(entry, now)
        if credential is not None:
            return credential
        if entry.task is None and now < entry.retry_at:
            reason = entry.last_error or f"{registry.id}: credentials unavailable"
            raise CredentialUnavailable(f"{reason} (next attempt in {entry.retry_at - now:.0f}s)")
        # Shielded: an admission that gives up waiting must not cancel the mint others share.
        return await asyncio.shield(self._start_mint(entry))

    def invalidate(self, registry_id: str | None = None) -> None:
        """Forget cached credentials (their material or the registry changed).

        A mint in flight is not cancelled: whoever waits on it still gets its answer (for the
        registry as it was when they asked); the next ``get`` starts afresh.
        """
        for key in [registry_id] if registry_id else list(self._entries):
            self._entries.pop(key, None)

    async def aclose(self) -> None:
        """Cancel the mints in flight (refreshes ahead included): the process is stopping."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def due_for_refresh(self, registry: Registry) -> bool:
        """Nothing usable cached, or past the refresh point (a refresh-ahead may be under way)."""
        entry = self._cached(registry)
        now = self._clock()
        return entry is None or not self._usable(entry, now) or self._refresh_due(entry, now)

    def _hand_out(self, entry: _Entry, now: float) -> Credential | None:
        if not self._usable(entry, now):
            return None
        if self._refresh_due(entry, now) and now >= entry.retry_at:
            self._start_mint(entry)  # refresh ahead; this caller keeps the current one
        return entry.credential

    def _cached(self, registry: Registry) -> _Entry | None:
        entry = self._entries.get(registry.id)
        return entry if entry is not None and _same(entry.registry, registry) else None

    def _entry(self, registry: Registry) -> _Entry:
        entry = self._entries.get(registry.id)
        if entry is None or entry.registry != registry:
            entry = self._entries[registry.id] = _Entry(registry)
        return entry

    @staticmethod
    def _usable(entry: _Entry, now: float) -> bool:
        return entry.credential is not None and now < entry.usable_until

    def _refresh_due(self, entry: _Entry, now: float) -> bool:
        credential = entry.credential
        if credential is None or credential.expires_at is None:
            return False
        life = credential.expires_at.timestamp() - entry.minted_at
        return now >= entry.minted_at + life * self._fraction

    def _start_mint(self, entry: _Entry) -> asyncio.Task[Credential]:
        # Single-flight: every caller needing this registry waits on the same task.
        if entry.task is None:
            task = entry.task = asyncio.get_running_loop().create_task(self._mint(entry))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        return entry.task

    def _finished(self, task: asyncio.Task[Credential]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a refresh-ahead nobody awaits must not log "never retrieved"

    async def _mint(self, entry: _Entry) -> Credential:
        registry = entry.registry
        provider = self._providers.get(registry.type)
        failure: str | None = None
        error_class = "CredentialUnavailable"
        duration = 0.0
        try:
            if provider is None:
                raise CredentialUnavailable(f"{registry.id}: no provider for type {registry.type} in this version")
            started = time.perf_counter()
            try:
                credential = await asyncio.to_thread(self._mint_blocking, provider, registry)
            finally:
                duration = time.perf_counter() - started
                self._metrics.token_mint_duration.labels(registry.type).observe(duration)
        except CredentialUnavailable as exc:
            failure = str(exc)
        except Exception as exc:  # a provider bug must not take admission down
            # The class name only: an SDK's message can quote the request that carried secrets.
            error_class = type(exc).__name__
            failure = f"{registry.id}: provider error {error_class}"
        finally:
            entry.task = None
        if failure is not None:
            # Raised outside the except blocks: the provider's exception must not ride along
            # as __context__ into tracebacks.
            self._failed(entry, failure, error_class)
        return self._minted(entry, credential, duration)

    def _mint_blocking(self, provider: Provider, registry: Registry) -> Credential:
        material = self._material.read(registry.secret_ref) if registry.secret_ref else None
        return provider.mint(registry, material)

    def _minted(self, entry: _Entry, credential: Credential, duration: float) -> Credential:
        now = self._clock()
        registry_id = entry.registry.id
        entry.credential, entry.minted_at, entry.last_error = credential, now, None
        self._metrics.token_last_success.labels(registry_id).set(now)
        fields = {"registry": registry_id, "provider": entry.registry.type, "duration_s": round(duration, 3)}
        if credential.expires_at is None:
            entry.usable_until, entry.failures, entry.retry_at = math.inf, 0, 0.0
            self._set_expiry_gauge(entry, None)
            self._metrics.token_mints.labels(registry_id, "success").inc()
            log.info("credential minted", extra={**fields, "expires_at": None})
            return credential
        expires = credential.expires_at.timestamp()
        fields["expires_at"] = _iso(expires)
        self._set_expiry_gauge(entry, expires)
        if expires - now >= MIN_LIFE:
            entry.usable_until, entry.failures, entry.retry_at = expires, 0, 0.0
            self._metrics.token_mints.labels(registry_id, "success").inc()
            log.info("credential minted", extra=fields)
            return credential
        delay = self._back_off(entry, now)
        entry.usable_until = max(expires, entry.retry_at)
        self._metrics.token_mints.labels(registry_id, "expired").inc()
        log.warning(
            "credential minted already expired or nearly so; using it and backing off",
            extra={**fields, "remaining_s": round(expires - now, 1), "retry_in_s": delay},
        )
        return credential

    def _failed(self, entry: _Entry, reason: str, error_class: str) -> NoReturn:
        # Only callers without a usable credential wait on a mint; everyone else keeps being
        # handed the last good one by ``get`` until it really expires.
        now = self._clock()
        delay = self._back_off(entry, now)
        entry.last_error = reason
        self._record_failure(entry.registry.id, error_class, now)
        self._metrics.token_mints.labels(entry.registry.id, "failure").inc()
        log.warning(
            "credential mint failed",
            extra={"registry": entry.registry.id, "reason": reason, "failures": entry.failures,
                   "retry_in_s": delay, "serving_last": self._usable(entry, now)},
        )
        raise CredentialUnavailable(reason)

    def _record_failure(self, registry_id: str, error_class: str, now: float) -> None:
        # One series per registry: the last failure's class replaces the one before it.
        for metric in self._metrics.token_last_failure.collect():
            for sample in metric.samples:
                if sample.labels["registry"] == registry_id and sample.labels["error_class"] != error_class:
                    self._metrics.token_last_failure.remove(registry_id, sample.labels["error_class"])
        self._metrics.token_last_failure.labels(registry_id, error_class).set(now)

    @staticmethod
    def _back_off(entry: _Entry, now: float) -> float:
        entry.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** (entry.failures - 1))
        entry.retry_at = now + delay
        return delay

    def _set_expiry_gauge(self, entry: _Entry, expires: float | None) -> None:
        if self._entries.get(entry.registry.id) is not entry:
            return  # invalidated while minting: the series belongs to its successor, or to nobody
        if expires is None:
            try:
                self._metrics.token_expiry.remove(entry.registry.id)  # absent means "no expiry"
            except KeyError:
                pass
        else:
            self._metrics.token_expiry.labels(entry.registry.id).set(expires)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _same(cached: Registry, asked: Registry) -> bool:
    # Identity first: the warm path asks with the very object it cached, and pydantic's
    # field-by-field __eq__ cost ~6 us a call there.
    return cached is asked or cached == asked
