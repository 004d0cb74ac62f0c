"""The one wiring place: ``create_app(settings, deps)`` builds routes and lifespan.

Nothing here runs at import. ``default_dependencies`` builds the embedded set-up (in-memory
SecretStore, credentials from ``--secrets-dir``); tests build ``Dependencies`` with fakes.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from webhook import status
from webhook.admission.endpoint import MutateEndpoint, health
from webhook.decision import Admitter
from webhook.ci.tokens import TokenList
from webhook.activeregistries import ActiveRegistries
from webhook.secretsdir import SecretsDir
from webhook.metrics import Metrics
from webhook.providers import MaterialSource
from webhook.providers.builtin import builtin_providers
from webhook.provisioner import Provisioner
from webhook.pullsecrets import InMemorySecretStore, SecretStore
from webhook.settings import Settings
from webhook.tenancy import NamespaceLabels, NoCluster
from webhook.credentialcache import CredentialCache


@dataclass
class Readiness:
    """Named conditions; /readyz is 200 only when all hold."""

    conditions: dict[str, bool] = field(default_factory=dict)

    def set(self, name: str, value: bool) -> None:
        self.conditions[name] = value

    def failing(self) -> list[str]:
        return [name for name, ok in self.conditions.items() if not ok]


@dataclass
class Dependencies:
    metrics: Metrics
    config: ActiveRegistries
    store: SecretStore
    tokens: CredentialCache
    readiness: Readiness
    namespaces: NamespaceLabels = field(default_factory=NoCluster)
    ci_tokens: TokenList = field(default_factory=TokenList)


def default_dependencies(settings: Settings, material: MaterialSource | None = None) -> Dependencies:
    metrics = Metrics()
    source = material if material is not None else SecretsDir(settings.secrets_dir)
    tokens = CredentialCache(builtin_providers(), source, metrics, refresh_fraction=settings.refresh_fraction)
    readiness = Readiness({"registry list valid": False, "certificate loaded": False})
    return Dependencies(metrics, ActiveRegistries(metrics), InMemorySecretStore(), tokens, readiness)


# Allocations between young collections while serving (CPython's default is 700; see lifespan).
YOUNG_GENERATION = 10_000


def create_app(settings: Settings, deps: Dependencies) -> Starlette:
    provisioner = Provisioner(deps.tokens, deps.store, deps.metrics, budget_seconds=settings.admission_budget_seconds)
    admitter = Admitter(deps.config, provisioner, settings.excluded, deps.namespaces, deps.metrics)
    mutate = MutateEndpoint(admitter, deps.metrics, max_body_bytes=settings.max_body_bytes,
                            body_timeout=settings.body_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        # What is alive at start-up (modules, pydantic schemas, the registry list: ~150k
        # objects) lives as long as the process. Unfrozen, every full collection walked all of
        # it, stalling every request in flight (~150 ms on the benchmark machine, several times
        # a second under load: bench/README.md); frozen, it skips it. Caches that sync later
        # are not frozen: a second freeze after the sync was measured and changed nothing.
        gc.freeze()
        # With the start-up heap frozen, the collector's "long-lived" count is near zero, so a
        # full collection came every 10 middle ones: under a burst of 1,000 admissions, two
        # walked every connection and admission in flight (90-190 ms each). A young generation
        # of 10,000 instead of 700 allocations makes all three generations 14x rarer; the
        # cycles left waiting are a few MB at most. Cold-burst p99 1.9-2.2 s -> 1.6-1.7 s.
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_GENERATION, *thresholds[1:])
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()  # one process may build many apps (tests): let their cycles be collected
            # Before the cluster's stop closes the API client: nothing of ours may still use it.
            await provisioner.aclose()
            await deps.tokens.aclose()
            deps.tokens.invalidate()

    routes = [
        Route("/mutate", mutate.handle, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", _readiness(deps), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.deps = deps
    app.state.mutate = mutate  # the admission pipeline without HTTP, for the in-process benchmark
    return app


def _readiness(deps: Dependencies):
    def ready(_: Request) -> Response:
        deps.readiness.set("registry list valid", deps.config.ready)
        failing = deps.readiness.failing()
        if failing:
            return PlainTextResponse("not ready: " + ", ".join(failing) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    return ready


def create_metrics_app(deps: Dependencies, clock: Callable[[], float] = time.time) -> Starlette:
    # Plain functions: Starlette runs them in its thread pool, so counting the managed Secrets
    # (about 30 ms for 10,000, measured December 2026) never holds up the event loop.
    def observe() -> None:
        synced = deps.readiness.conditions.get("caches synced", True)  # no cluster: nothing to sync
        status.observe(deps.metrics, deps.config.registries, deps.tokens, deps.store, synced, clock())

    def metrics(_: Request) -> Response:
        observe()
        return Response(generate_latest(deps.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def status_json(_: Request) -> Response:
        observe()
        return JSONResponse(status.document(deps.metrics.registry))

    # /healthz and /readyz here too: with --client-ca the admission port refuses the kubelet's
    # probes (they present no client certificate).
    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"]), Route("/status", status_json, methods=["GET"]),
                             Route("/healthz", health, methods=["GET"]), Route("/readyz", _readiness(deps), methods=["GET"])])
