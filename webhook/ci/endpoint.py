"""The CI credentials endpoint: ``GET /registries/{id}/creds`` behind service-user bearer tokens.

It is its own Starlette app, served on its own TLS listener (``--ci-port``), never on the
admission port: CI runners call it from outside the cluster, and that exposure must not
reach the endpoint the API server depends on.

The checks run in an order that tells a caller only what it is entitled to know: a valid
token is served whatever its address (callers behind one Ingress share an address); an
address that keeps failing is otherwise throttled (429); an unauthenticated caller
gets 401 whatever the registry; a token whose role or scope does not reach a registry gets 403
before learning whether that registry exists. Every request leaves one audit line (service
user name, never the token) and one count in ``regcred_ci_requests_total``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhook.activeregistries import ActiveRegistries
from webhook.ci.tokens import TokenEntry, TokenList
from webhook.credentialcache import CredentialCache
from webhook.jsontypes import JsonObject
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable
from webhook.registries import Registry

log = logging.getLogger(__name__)
# The audit logger keeps the name it was documented with, whatever the module is called:
# log pipelines filter on it.
audit = logging.getLogger("webhook.ciapi.audit")

# RFC 6750 section 2.1: "Bearer" then one b64token; bounded so nobody makes us hash megabytes.
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]{1,512}=*) *$", re.IGNORECASE)
_CHALLENGE = 'Bearer realm="regcred"'
# curl --retry and most CI retry helpers honour Retry-After on 503; the token cache backs off
# from 5 s upwards, so asking sooner than this would mostly hit the same backoff.
_UNAVAILABLE_RETRY_SECONDS = 10
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class FailureLimiter:
    """Failed authentications per client address in fixed windows, with bounded memory.

    An address that fails ``max_failures`` times within ``window_seconds`` is refused (429)
    until the window that began with its first failure ends. IPv6 clients are counted per /64,
    since one host can use any address of its /64. At most ``max_clients`` addresses are
    tracked; the one that failed least recently is forgotten first.
    """

    def __init__(self, *, max_failures: int = 10, window_seconds: float = 60.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (start, failures)

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        key = _client_key(address)
        window = self._windows.get(key)
        if window is None:
            return None
        start, failures = window
        remaining = start + self._window - self._clock()
        if remaining <= 0:
            del self._windows[key]
            return None
        return math.ceil(remaining) if failures >= self._max_failures else None

    def failed(self, address: str) -> None:
        key = _client_key(address)
        now = self._clock()
        start, failures = self._windows.pop(key, (now, 0))
        if now - start >= self._window:
            start, failures = now, 0
        self._windows[key] = (start, failures + 1)  # re-inserted last: most recently failing
        while len(self._windows) > self._max_clients:
            self._windows.popitem(last=False)


def _client_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True)
class _Call:
    """Who asked for what; filled in as the checks learn it, read by the audit line."""

    address: str
    registry_id: str | None
    entry: TokenEntry | None = None


class _Denied(Exception):
    """An answer other than 200, raised by a check and turned into a response in one place."""

    def __init__(self, status: int, outcome: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.outcome, self.reason, self.headers = status, outcome, reason, headers or {}


class CredentialsEndpoint:
    def __init__(self, config: ActiveRegistries, tokens: CredentialCache, token_list: TokenList, metrics: Metrics,
                 limiter: FailureLimiter):
        self._config = config
        self._tokens = tokens
        self._token_list = token_list
        self._metrics = metrics
        self._limiter = limiter

    async def handle(self, request: Request) -> Response:
        registry_id: str = request.path_params["registry_id"]
        call = _Call(request.client.host if request.client else "unknown", registry_id)
        body: JsonObject
        try:
            call.entry = self._authenticate(request, call.address)
            registry = self._authorize(call.entry, registry_id)
            credential = await self._credential(registry)
        except _Denied as denied:
            body = {"error": denied.outcome, "reason": denied.reason}
            return self._answer(call, denied.status, denied.outcome, body, denied.headers, denied.reason)
        except Exception as exc:  # a bug must still leave an audit line and show no material
            # Type and place only: the message or a traceback could carry a credential.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("ci credentials request failed",
                      extra={"error": type(exc).__name__, "at": f"{frame.filename}:{frame.lineno}"})
            body = {"error": "error", "reason": "internal error"}
            return self._answer(call, 500, "error", body, {}, "internal error")
        body = {"username": credential.username, "password": credential.password, "expiresAt": _rfc3339(credential)}
        return self._answer(call, 200, "ok", body, {}, None)

    async def no_route(self, request: Request) -> Response:
        call = _Call(request.client.host if request.client else "unknown", None)
        body = {"error": "no_route", "reason": "no such endpoint"}
        return self._answer(call, 404, "no_route", body, {}, "no such endpoint")

    def _authenticate(self, request: Request, address: str) -> TokenEntry:
        header = request.headers.get("authorization")
        match = _BEARER.match(header) if header is not None else None
        entry = self._token_list.find(match.group(1)) if match else None
        if entry is not None:
            # A valid token always gets in, even from a throttled address: behind an Ingress
            # every pipeline shares one address, and one failing job must not lock out all CI.
            # Guessing a 256-bit token is hopeless either way; the limiter only slows guessing.
            return entry
        wait = self._limiter.retry_after(address)
        if wait is not None:
            raise _Denied(429, "rate_limited", "too many failed authentications from this address",
                          {"Retry-After": str(wait)})
        self._limiter.failed(address)
        if header is None:
            raise _Denied(401, "unauthenticated", "missing bearer token", {"WWW-Authenticate": _CHALLENGE})
        reason = "unknown token" if match else "malformed Authorization header"
        raise _Denied(401, "unauthenticated", reason,
                      {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'})

    def _authorize(self, entry: TokenEntry, registry_id: str) -> Registry:
        if not entry.may_fetch:
            raise _Denied(403, "forbidden_role", f"role {entry.role} may not fetch credentials")
        if not entry.allows(registry_id):
            raise _Denied(403, "forbidden_scope", "this token is not allowed for this registry")
        registries = self._config.registries
        if registries is None:
            raise _Denied(503, "not_ready", "no registry list is loaded",
                          {"Retry-After": str(_UNAVAILABLE_RETRY_SECONDS)})
        registry = registries.by_id(registry_id)
        if registry is None:
            raise _Denied(404, "not_found", "unknown registry")
        if not registry.expose_to_ci:
            raise _Denied(403, "not_exposed", "registry is not exposed to CI (exposeToCI is not true)")
        return registry

    async def _credential(self, registry: Registry) -> Credential:
        try:
            return await self._tokens.get(registry)
        except CredentialUnavailable as exc:
            # The message is safe to show by contract: a registry id and reason, never material.
            raise _Denied(503, "unavailable", str(exc), {"Retry-After": str(_UNAVAILABLE_RETRY_SECONDS)}) from None

    def _answer(self, call: _Call, status: int, outcome: str, body: JsonObject, headers: dict[str, str],
                reason: str | None) -> Response:
        # Only ids of the active list reach labels and logs: the path is caller input and
        # could be anything, even a token pasted into the URL.
        registries = self._config.registries
        known = registries is not None and call.registry_id is not None and registries.by_id(call.registry_id)
        label = call.registry_id if known else "unknown"
        self._metrics.ci_requests.labels(label, outcome).inc()
        fields = {"token_name": call.entry.name if call.entry else None, "registry": label, "outcome": outcome,
                  "status": status, "client": call.address}
        if reason is not None:
            fields["reason"] = reason
        audit.info("ci credentials request", extra=fields)
        # no-store on every answer: a credential must not sit in a proxy or runner cache.
        return JSONResponse(body, status_code=status, headers={**headers, "Cache-Control": "no-store"})


def _rfc3339(credential: Credential) -> str | None:
    if credential.expires_at is None:
        return None
    # Whole seconds, rounded down: a client must never believe the credential lives longer.
    moment = credential.expires_at.astimezone(UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def create_ci_app(config: ActiveRegistries, tokens: CredentialCache, token_list: TokenList, metrics: Metrics, *,
                  clock: Callable[[], float] = time.monotonic, max_failures: int = 10,
                  window_seconds: float = 60.0, max_clients: int = 10_000) -> Starlette:
    """The CI listener's app. ``clock`` (monotonic seconds) drives the failed-auth rate limit."""
    limiter = FailureLimiter(max_failures=max_failures, window_seconds=window_seconds,
                             max_clients=max_clients, clock=clock)
    endpoint = CredentialsEndpoint(config, tokens, token_list, metrics, limiter)
    routes = [
        Route("/registries/{registry_id}/creds", endpoint.handle, methods=["GET"]),
        # Anything else is answered here too, so every request leaves an audit line.
        Route("/{path:path}", endpoint.no_route, methods=_ALL_METHODS),
    ]
    app = Starlette(routes=routes)
    app.state.limiter = limiter
    return app

