"""A client-side rate limit, and blocking calls moved off the event loop (construction: ``config``).

Every request regcred makes goes through ``KubeClient``: it takes a token from a token bucket
(client-go's default limiter: ``qps`` refill, ``burst`` capacity), so a refresh of thousands of
Secrets or a relist storm cannot flood the API server, then runs the blocking ``kubernetes``
call in a worker thread with a request timeout, so an unreachable API server costs a bounded
wait instead of a hung admission.

A 429 or 5xx answer carrying ``Retry-After`` is retried after that many seconds, as client-go
does for every verb: the server says it did not process the request and when to come back
(API Priority and Fairness sends 429s like that under load). The wait is on the event loop,
never in a worker thread, capped, and bounded in count; each retry takes a rate-limit token.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes.client import ApiClient, ApiException, CoordinationV1Api, CoreV1Api

from webhook.jsontypes import JsonObject
from webhook.kube.connection import load_api_client

T = TypeVar("T")

# client-go retries up to 10 times; a few suffice here, since every caller has its own retry
# (informer relist, write repair, refresher pass) and an admission has a budget of seconds.
MAX_RETRIES = 4
# A server asking for minutes would hold a refresher worker that long: wait at most this.
MAX_RETRY_AFTER = 10.0
# Paced calls on the shared limit wake this many at a time (``TokenBucket``'s group): the
# refresher's four writers then write together, a fifth of a second apart at 20 qps.
PACED_GROUP = 4


def retry_after(exc: BaseException) -> float | None:
    """Seconds the API server asked us to wait before retrying, or None if it did not ask.

    Like client-go's checkWait: only 429 and 5xx answers, only an integer ``Retry-After``.
    """
    if not isinstance(exc, ApiException) or not (exc.status == 429 or (exc.status or 0) >= 500):
        return None
    try:
        seconds = int((exc.headers or {}).get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0), MAX_RETRY_AFTER)


def describe_api_error(exc: BaseException) -> str:
    """A log- and Pod-safe description of a failed call: status and reason, never a body.

    ApiException's text includes the response body, which for Secrets may echo data.
    """
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', None) or ''}".strip()
    if status == 0:  # the client's wrapper for TLS failures
        return "TLS or connection error"
    if "Timeout" in type(exc).__name__ or "timed out" in str(exc):
        return "timed out"
    return f"connection failed ({type(exc).__name__})"


class TokenBucket:
    """At most ``burst`` calls at once, refilled at ``qps`` per second; ``qps <= 0`` is unlimited.

    Reservations may drive the balance negative: each caller sleeps off its own deficit, so
    waiters are served in arrival order without holding a lock across the sleep.

    ``group``: a caller that must wait wakes on the next multiple of ``group / qps`` seconds,
    so paced callers leave together, ``group`` at a time, instead of one every ``1 / qps``. A
    Secret write that runs alone, after 50 ms of other work, costs regcred about twice the CPU
    of one that runs right after another (a refresh at 20 writes a second: 1.6 ms against
    0.9 ms a write, interpreter and CPU caches cold), and the waiters' timers fire in one loop
    iteration. The long-run rate is unchanged: the bucket keeps filling while a caller
    oversleeps, so the callers after it find tokens waiting (``group <= burst`` keeps the cap
    from dropping any). A window may then hold at most ``group`` calls more than the bucket
    alone allows (``burst + qps * seconds``): a waiter released late and the tokens that
    filled meanwhile.
    """

    def __init__(self, qps: float, burst: int, *, group: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if not 1 <= group <= burst:
            raise ValueError("group must be at least 1 and at most burst")
        self._qps = qps
        self._burst = burst
        self._grain = group / qps if qps > 0 and group > 1 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()

    async def acquire(self) -> float:
        """Take one token, sleeping until it is available; returns the seconds waited."""
        wait = self._reserve()
        if wait:
            await self._sleep(wait)
        return wait

    def has_token(self) -> bool:
        """Whether a call now would need no wait (nothing is taken)."""
        return self._qps <= 0 or self._refilled() >= 1

    def _refilled(self) -> float:
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._qps)
        self._last = now
        return self._tokens

    def _reserve(self) -> float:
        """Take one token, possibly on credit; the seconds to wait before using it."""
        if self._qps <= 0:
            return 0.0
        self._tokens = self._refilled() - 1
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self._qps
        if self._grain:
            # The tolerance keeps a due time that is a multiple already, give or take float
            # rounding, from being pushed a whole grain later.
            wake = math.ceil((self._last + wait) / self._grain - 1e-9) * self._grain
            wait = max(wait, wake - self._last)
        return wait


class KubeClient:
    """The typed API groups regcred uses, behind one rate limit, calls on a thread pool.

    ``call`` and ``call_json`` use a pool sized for short requests. ``stream`` gives each
    long-lived watch its own daemon thread: a watch can then never starve writes of workers,
    and one left open can never keep the interpreter from exiting (pool threads are joined
    at exit, and a watch read may block for minutes).
    """

    # Told of every 403 (``permissions.PermissionReporter`` names a missing RBAC rule); siblings
    # made by ``with_limit`` share it.
    on_forbidden: Callable[[ApiException], None] | None = None

    def __init__(self, api: ApiClient, *, qps: float = 20.0, burst: int = 30,
                 request_timeout: float = 10.0, workers: int = 16,
                 limiter: TokenBucket | None = None):
        self.api = api
        self.core = CoreV1Api(api)
        self.coordination = CoordinationV1Api(api)
        self.limiter = limiter or TokenBucket(qps, burst, group=min(PACED_GROUP, burst))
        self.request_timeout = request_timeout
        self._calls = ThreadPoolExecutor(workers, thread_name_prefix="kube-call")
        self._own_pools: list[ThreadPoolExecutor] = [self._calls]

    @classmethod
    def connect(cls, kubeconfig: str | os.PathLike[str] | None = None, **options: Any) -> KubeClient:
        """Load configuration (see ``load_api_client``) and wrap it; options go to ``__init__``."""
        # Room for the workers plus a handful of open watches.
        return cls(load_api_client(kubeconfig, pool_size=options.get("workers", 16) + 4), **options)

    def with_limit(self, qps: float, burst: int, *, workers: int | None = None) -> KubeClient:
        """The same connections behind a rate limit of its own, and with ``workers`` threads of
        its own (else the parent's); close only the parent, which stops them too.

        Leader election gets both, so Lease renewals never queue behind other calls: against a
        slow API server, admission writes once held every shared worker past the renew
        deadline and leadership flapped (controller-runtime gives its election client a
        separate limiter for the same reason).
        """
        sibling = copy.copy(self)
        sibling.limiter = TokenBucket(qps, burst)
        if workers is not None:
            sibling._calls = ThreadPoolExecutor(workers, thread_name_prefix="kube-own")
            self._own_pools.append(sibling._calls)
        return sibling

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread, rate-limited, with the request timeout."""
        kwargs.setdefault("_request_timeout", self.request_timeout)
        return await self._retrying(functools.partial(self._in_worker, functools.partial(fn, *args, **kwargs)))

    async def call_json(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JsonObject:
        """Like ``call``, but the raw body is decoded in the worker thread: plain dicts, no models."""
        kwargs.setdefault("_request_timeout", self.request_timeout)

        def fetch() -> JsonObject:
            response = fn(*args, _preload_content=False, **kwargs)
            decoded: JsonObject = json.loads(response.data)
            return decoded

        return await self._retrying(functools.partial(self._in_worker, fetch))

    async def stream(self, blocking: Callable[[], T]) -> T:
        """Run a long blocking function (a watch) on its own daemon thread, after one token.

        Cancelling the await does not stop the thread: the caller unblocks it (the informer
        shuts the response's socket down).
        """
        return await self._retrying(functools.partial(self._on_own_thread, blocking))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` after a rate-limit token; again while the server answers Retry-After."""
        for retries_left in range(MAX_RETRIES, -1, -1):
            await self.limiter.acquire()
            try:
                return await attempt()
            except ApiException as exc:
                if exc.status == 403 and self.on_forbidden is not None:
                    self.on_forbidden(exc)
                wait = retry_after(exc)
                if wait is None or not retries_left:
                    raise
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _on_own_thread(self, blocking: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def target() -> None:
            result: T | None = None
            error: BaseException | None = None
            try:
                result = blocking()
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass

        threading.Thread(target=target, name="kube-watch", daemon=True).start()
        return await future

    async def _in_worker(self, blocking: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._calls, blocking)

    def close(self) -> None:
        """Stop the worker pool and drop the connections; stop informers first."""
        for pool in self._own_pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled while the thread ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
