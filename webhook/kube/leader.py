"""Leader election on a ``coordination.k8s.io/v1`` Lease, following client-go's leaderelection.

* Expiry is judged by local observation, never by comparing the holder's ``renewTime`` with
  our clock: a candidate remembers when it first saw the current record (holder, renewTime)
  and takes over only once that record has stayed unchanged for ``leaseDurationSeconds``.
  Clock skew between nodes therefore cannot make two leaders.
* The leader renews every ``retry_period``; when no renew has succeeded for ``renew_deadline``
  it stops leading at once, even while a call is still waiting (on a Retry-After, a hung
  server): each attempt is cut off at the deadline. ``renew_deadline < lease_duration`` means it has stopped acting
  before anyone else may take over.
* Every write carries the Lease's resourceVersion: of two candidates racing for an expired
  Lease one wins, the other gets 409 Conflict and tries again next period.
* A clean stop releases the Lease (holder cleared, duration 1 s), so the successor takes over
  within a retry period instead of a whole lease duration. Cancellation does not release:
  that is what a crash looks like, and the Lease then simply expires.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes.client import ApiException

from webhook.jsontypes import JsonObject
from webhook.kube.client import KubeClient, describe_api_error
from webhook.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    """controller-runtime's defaults: a crashed leader's refreshing resumes elsewhere within
    ``lease_duration``, a released Lease's within ``retry_period``."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")


def default_identity() -> str:
    """Pod name (the hostname in a Pod) plus a random suffix, as client-go's examples do."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: KubeClient, *, namespace: str, name: str = "regcred", identity: str,
                 timings: LeaseTimings = LeaseTimings(), metrics: Metrics | None = None,
                 on_change: Callable[[bool], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._leases = client.coordination
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = timings.lease_duration
        self._deadline = timings.renew_deadline
        self._retry = timings.retry_period
        self._metrics = metrics
        self._on_change = on_change
        self._clock = clock
        self._leading = False
        self._last_renew = 0.0
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and renew until ``stop`` is set, then release the Lease if held."""
        try:
            while not stop.is_set():
                await self._cycle()
                try:
                    await asyncio.wait_for(stop.wait(), self._retry)
                except TimeoutError:
                    pass
            if self._leading:
                await self._release()
        finally:
            self._set_leading(False)

    async def _cycle(self) -> None:
        result = await self._bounded(self._attempt())
        if result == "held":
            self._last_renew = self._clock()
            self._set_leading(True)
        elif result == "other" or self._clock() - self._last_renew >= self._deadline:
            self._set_leading(False)

    async def _bounded(self, attempt: Coroutine[None, None, str]) -> str:
        """``attempt``'s answer, or "failed" once the renew deadline has passed by ``clock``.

        Bounded like client-go's renew loop (a context with the renew deadline): a call stuck
        in Retry-After waits or on a hung API server must not keep us leading past the point
        where another candidate may take the Lease over. The deadline is judged by ``clock``,
        looked at again at least every retry period, so an injected clock alone decides it.
        """
        anchor = self._last_renew if self._leading else self._clock()
        task = asyncio.ensure_future(attempt)
        try:
            while (remaining := self._deadline - (self._clock() - anchor)) > 0:
                done, _ = await asyncio.wait({task}, timeout=min(remaining, self._retry))
                if done:
                    return task.result()
            return "failed"
        finally:
            task.cancel()  # a no-op once done

    async def _attempt(self) -> str:
        """held (we hold it now), other (someone else validly does) or failed."""
        try:
            lease = await self._get()
            if lease is None:
                return "held" if await self._write(None) else "failed"
            spec = lease.get("spec") or {}
            self._observe(spec)
            holder = spec.get("holderIdentity")
            if holder and holder != self.identity and not self._expired(spec):
                return "other"
            return "held" if await self._write(lease) else "failed"
        except Exception as exc:  # the API is unreachable: keep trying, step down at the deadline
            log.warning("leader election attempt failed", extra={"lease": self._name, "error": describe_api_error(exc)})
            return "failed"

    def _observe(self, spec: JsonObject) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()

    def _expired(self, spec: JsonObject) -> bool:
        return self._clock() >= self._observed_at + (spec.get("leaseDurationSeconds") or self._duration)

    async def _get(self) -> JsonObject | None:
        try:
            return await self._client.call_json(self._leases.read_namespaced_lease, self._name, self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(self, lease: JsonObject | None) -> bool:
        """Create the Lease, or take it over / renew it; False when another writer won (409)."""
        now = _micro_time()
        spec = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        spec.update(holderIdentity=self.identity, renewTime=now,
                    leaseDurationSeconds=max(1, round(self._duration)))
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": (lease or {}).get("metadata") or {"name": self._name, "namespace": self._namespace},
                "spec": spec}
        try:
            if lease is None:
                await self._client.call_json(self._leases.create_namespaced_lease, self._namespace, body)
            else:
                await self._client.call_json(self._leases.replace_namespaced_lease, self._name, self._namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(spec)
        return True

    async def _release(self) -> None:
        try:
            lease = await self._get()
            spec = dict((lease or {}).get("spec") or {})
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            now = _micro_time()
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
            await self._client.call_json(self._leases.replace_namespaced_lease, self._name, self._namespace,
                                         {**lease, "spec": spec})
            log.info("leader lease released", extra={"lease": self._name})
        except Exception as exc:  # it expires on its own; the successor just waits longer
            log.warning("could not release the leader lease",
                        extra={"lease": self._name, "error": describe_api_error(exc)})

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        message = "became leader" if leading else "stopped leading"
        log.info(message, extra={"lease": self._name, "identity": self.identity})
        if self._metrics is not None:
            self._metrics.leader.set(1 if leading else 0)
        if self._on_change is not None:
            self._on_change(leading)
