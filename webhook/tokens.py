"""Per-registry credential cache: expiry, refresh-ahead, single-flight, keep-last-on-failure.

A credential is reused until ``refresh_fraction`` (2/3) of its life has passed; after that
the cached one is still handed out while one background mint replaces it (cert-manager
renews at 2/3 of lifetime for the same reason: a whole third of the life is left to retry).
If minting fails, the last credential is used until it really expires, and the next attempt
waits out an exponential backoff so an unreachable cloud is never hammered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable, MaterialSource, Provider
from webhook.registries import Registry

log = logging.getLogger(__name__)

_BACKOFF_MIN = 5.0
_BACKOFF_MAX = 300.0


@dataclass(slots=True)
class _Entry:
    registry: Registry
    credential: Credential | None = None
    minted_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0  # no new mint before this (monotonic-free wall clock, seconds)
    task: asyncio.Task | None = None


class TokenCache:
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

    def peek(self, registry: Registry) -> Credential | None:
        """The cached credential if it has not expired; never mints."""
        entry = self._entries.get(registry.id)
        if entry is None or entry.registry != registry or entry.credential is None:
            return None
        return entry.credential if not self._expired(entry.credential) else None

    async def get(self, registry: Registry) -> Credential:
        """A valid credential, from memory when possible. Raises CredentialUnavailable."""
        entry = self._entry(registry)
        now = self._clock()
        credential = entry.credential
        if credential is not None and not self._expired(credential):
            if self._refresh_due(entry, now) and now >= entry.retry_at:
                self._start_mint(entry)  # refresh ahead; this caller keeps the current one
            return credential
        if entry.task is None and now < entry.retry_at:
            raise CredentialUnavailable(f"{registry.id}: credentials unavailable, retrying after backoff")
        return await asyncio.shield(self._start_mint(entry))

    def invalidate(self, registry_id: str | None = None) -> None:
        """Forget cached credentials (their material or the registry changed)."""
        for key in [registry_id] if registry_id else list(self._entries):
            entry = self._entries.pop(key, None)
            if entry is not None and entry.task is not None:
                entry.task.cancel()

    def due_for_refresh(self, registry: Registry) -> bool:
        entry = self._entries.get(registry.id)
        return entry is None or entry.credential is None or self._refresh_due(entry, self._clock())

    def _entry(self, registry: Registry) -> _Entry:
        entry = self._entries.get(registry.id)
        if entry is None or entry.registry != registry:
            self.invalidate(registry.id)
            entry = self._entries[registry.id] = _Entry(registry)
        return entry

    def _expired(self, credential: Credential) -> bool:
        return credential.expires_at is not None and credential.expires_at.timestamp() <= self._clock()

    def _refresh_due(self, entry: _Entry, now: float) -> bool:
        credential = entry.credential
        if credential is None or credential.expires_at is None:
            return False
        life = credential.expires_at.timestamp() - entry.minted_at
        return now >= entry.minted_at + life * self._fraction

    def _start_mint(self, entry: _Entry) -> asyncio.Task:
        # Single-flight: every caller needing this registry waits on the same task.
        if entry.task is None:
            entry.task = asyncio.get_running_loop().create_task(self._mint(entry))
            # A refresh-ahead nobody awaits must not log "exception was never retrieved".
            entry.task.add_done_callback(lambda task: task.cancelled() or task.exception())
        return entry.task

    async def _mint(self, entry: _Entry) -> Credential:
        registry = entry.registry
        try:
            provider = self._providers.get(registry.type)
            if provider is None:
                raise CredentialUnavailable(f"{registry.id}: no provider for type {registry.type} in this version")
            started = time.perf_counter()
            try:
                credential = await asyncio.to_thread(self._mint_blocking, provider, registry)
            finally:
                self._metrics.token_mint_duration.labels(registry.type).observe(time.perf_counter() - started)
        except CredentialUnavailable as exc:
            return self._failed(entry, str(exc))
        except Exception as exc:  # a provider bug must not take admission down
            return self._failed(entry, f"{registry.id}: provider error {type(exc).__name__}")
        finally:
            entry.task = None
        return self._minted(entry, credential)

    def _mint_blocking(self, provider: Provider, registry: Registry) -> Credential:
        material = self._material.read(registry.secret_ref) if registry.secret_ref else None
        return provider.mint(registry, material)

    def _minted(self, entry: _Entry, credential: Credential) -> Credential:
        now = self._clock()
        entry.credential, entry.minted_at, entry.failures, entry.retry_at = credential, now, 0, 0.0
        registry_id = entry.registry.id
        if credential.expires_at is None:
            self._metrics.token_expiry.labels(registry_id).set(0)
            self._metrics.token_mints.labels(registry_id, "success").inc()
            return credential
        self._metrics.token_expiry.labels(registry_id).set(credential.expires_at.timestamp())
        if credential.expires_at.timestamp() - now < _BACKOFF_MIN:
            # A provider handed back a token that is (nearly) expired: use it, say so, and
            # wait before asking again instead of re-minting in a tight loop.
            entry.retry_at = now + _BACKOFF_MIN
            self._metrics.token_mints.labels(registry_id, "expired").inc()
            log.warning("credential minted already expired or nearly so", extra={"registry": registry_id})
        else:
            self._metrics.token_mints.labels(registry_id, "success").inc()
        return credential

    def _failed(self, entry: _Entry, reason: str) -> Credential:
        entry.failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_MIN * 2 ** (entry.failures - 1))
        entry.retry_at = self._clock() + delay
        self._metrics.token_mints.labels(entry.registry.id, "failure").inc()
        log.warning("credential mint failed", extra={"registry": entry.registry.id, "reason": reason, "retry_in_s": delay})
        if entry.credential is not None and not self._expired(entry.credential):
            return entry.credential  # keep serving the last good one until it really expires
        raise CredentialUnavailable(reason)
