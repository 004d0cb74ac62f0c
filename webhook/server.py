"""Run ``regcred serve``: the TLS admission listener, the CI credentials listener (TLS, optional)
and the plain-HTTP metrics listener, plus the watchers that reload changed files.

Shutdown (SIGTERM from the kubelet, or SIGINT): every listener stops accepting at once, requests
in flight finish (up to ``listeners.GRACEFUL_SECONDS``), and meanwhile the leader Lease is released so
another replica takes over refreshing within a retry period. Then the caches stop and the
process exits 0. The whole of it fits the Pod's default terminationGracePeriodSeconds (30).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import uvicorn

from webhook import filewatch, logs
from webhook.app import Dependencies, create_app
from webhook.certs import TlsFiles, check_pair, check_serving, ensure_dev_certificate, reload_into
from webhook.composition import Process, compose
from webhook.kube.webhookcert import WebhookCertController
from webhook.listeners import Listener, check_client_ca, secondary_configs, tls_listener_config
from webhook.secretsdir import missing_material
from webhook.settings import Settings
from webhook.tenancy import NoCluster

log = logging.getLogger(__name__)

# How long serve waits for a usable managed certificate before it gives up (exit 2).
MANAGED_CERT_WAIT_SECONDS = 30.0
# Allocations between young collections while serving (CPython's default is 700; see tuned_gc).
YOUNG_GENERATION = 10_000
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def tls_files(settings: Settings) -> TlsFiles:
    if settings.tls_cert and settings.tls_key:
        return TlsFiles(settings.tls_cert, settings.tls_key)
    hosts = ["localhost", "127.0.0.1", "::1"]
    if settings.namespace:
        hosts += [f"regcred.{settings.namespace}.svc", f"regcred.{settings.namespace}.svc.cluster.local"]
    files = ensure_dev_certificate(settings.dev_certs_dir, hosts)
    log.warning(
        "no --tls-cert given; serving a development certificate",
        extra={"cert": str(files.cert), "ca": str(files.ca)},
    )
    return files


def load_configuration(settings: Settings, deps: Dependencies) -> None:
    if settings.config is None:
        if not settings.registries_configmap:
            log.error("no registry list: give --config FILE or --registries-configmap NAME; /readyz stays false")
        return
    deps.config.apply_file(settings.config)
    registries = deps.config.registries.registries if deps.config.registries else []
    if not settings.uses_cluster:  # in a cluster the credentials are Secrets, not folders
        for problem in missing_material(settings.secrets_dir, [r.secret_ref for r in registries if r.secret_ref]):
            log.warning(problem)
    selectors = [r.id for r in registries if r.namespace_selector is not None]
    if selectors and isinstance(deps.namespaces, NoCluster):
        log.warning("no cluster: namespaceSelector is not evaluated in local mode, namespaces lists are",
                    extra={"registries": selectors})


async def serve(settings: Settings, deps: Dependencies | None = None) -> int:
    """Run ``regcred serve`` until a signal; ``deps``: tests' own dependencies instead of ``compose``."""
    logs.configure(settings.log_level)
    if deps is not None:
        process = Process(deps)
    else:
        try:
            process = compose(settings)
        except Exception as exc:  # unreadable kubeconfig, unknown namespace: say so and stop
            log.error("cannot use the cluster: %s", exc, extra={"error": type(exc).__name__})
            return 2
    deps = process.deps
    load_configuration(settings, deps)
    if settings.ci_port and settings.ci_tokens is not None and not deps.ci_tokens.apply_file(settings.ci_tokens):
        # A server refusing every CI token is worse than one that does not start: say why and stop.
        # (A watched Secret is different: it may be fixed at any time, and its last good list is kept.)
        log.error("cannot start: --ci-tokens %s is unusable; `regcred ci-token check` says why offline",
                  settings.ci_tokens, extra={"errors": deps.ci_tokens.errors})
        return 2
    files = tls_files(settings)
    try:
        check_client_ca(settings.client_ca)
    except ValueError as exc:
        log.error(str(exc))
        return 2
    managed = process.webhookcert
    expiry = None if managed is not None else _usable(files, settings.tls_names)
    if managed is None and expiry is None:
        return 2
    try:
        await process.start()
        if managed is not None:
            expiry = await _managed_certificate(managed, files, settings.tls_names)
            if expiry is None:
                return 2
        assert expiry is not None  # checked above, for either mode
        certificate = _Certificate(deps, expiry.timestamp())
        with tuned_gc():
            return await _serve_listeners(settings, deps, files, certificate, process.stopping)
    finally:
        await process.aclose()


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """The process's garbage collector while serving (process-wide, so here and not in an app).

    What is alive at start-up (modules, pydantic schemas, the registry list: ~150k objects)
    lives as long as the process. Unfrozen, every full collection walked all of it, stalling
    every request in flight (~150 ms on the benchmark machine, several times a second under
    load: bench/README.md); frozen, it skips it. Caches that sync later are not frozen: a
    second freeze after the sync was measured and changed nothing. With the start-up heap
    frozen, the collector's "long-lived" count is near zero, so a full collection came every
    10 middle ones: under a burst of 1,000 admissions, two walked every connection and
    admission in flight (90-190 ms each). A young generation of 10,000 instead of 700
    allocations makes all three generations 14x rarer; the cycles left waiting are a few MB at
    most. Cold-burst p99 1.9-2.2 s -> 1.6-1.7 s.
    """
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()  # one process may serve many times (tests): let their cycles be collected


async def _managed_certificate(managed: WebhookCertController, files: TlsFiles,
                               names: tuple[str, ...]) -> datetime | None:
    """tls.mode managed: the listeners start once the certificate regcred manages is on disk and
    usable. A stored pair can have expired while no replica ran (or between a follower's read and
    its election): the leader reissues it within a round, so wait for that, up to
    MANAGED_CERT_WAIT_SECONDS, before giving up."""
    log.info("waiting for the managed webhook certificate", extra={"cert": str(files.cert)})
    deadline = time.monotonic() + MANAGED_CERT_WAIT_SECONDS
    await managed.loaded.wait()
    while True:
        waiting = time.monotonic() < deadline
        expiry = _usable(files, names, waiting=waiting)
        if expiry is not None or not waiting:
            return expiry
        managed.loaded.clear()  # until the next load, or the deadline
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(managed.loaded.wait(), deadline - time.monotonic())


def _usable(files: TlsFiles, names: tuple[str, ...], *, waiting: bool = False) -> datetime | None:
    """The certificate's notAfter when the pair is usable (matching, unexpired, covering
    ``names``); None, said in the log, otherwise (at INFO while ``waiting`` for a new one)."""
    try:
        check_pair(files.cert, files.key)
        return check_serving(files.cert, names)
    except ValueError as exc:
        if waiting:
            log.info("managed webhook certificate not usable yet; waiting for a new one", extra={"reason": str(exc)})
        else:
            log.error(str(exc))
        return None


@dataclass
class _Certificate:
    """The serving certificate in use: its notAfter, in the gauge and in readiness."""

    deps: Dependencies
    expiry: float

    def __post_init__(self) -> None:
        self.replaced(self.expiry)

    def replaced(self, expiry: float) -> None:
        self.expiry = expiry
        self.deps.metrics.tls_cert_expiry.set(expiry)

    async def watch(self, interval: float) -> None:
        """Readiness drops once the certificate in use expires unreplaced: the API server then
        refuses every call, and a green /readyz would hide it."""
        while True:
            valid = time.time() < self.expiry
            if self.deps.readiness.conditions.get("certificate loaded") and not valid:
                log.error("the TLS certificate in use has expired; /readyz is false until it is replaced")
            self.deps.readiness.set("certificate loaded", valid)
            await asyncio.sleep(interval)


async def _serve_listeners(settings: Settings, deps: Dependencies, files: TlsFiles, certificate: _Certificate,
                           stopping: Callable[[], None] = lambda: None) -> int:
    main = Listener(tls_listener_config(create_app(settings, deps), settings.port, files, settings,
                                        limit_concurrency=settings.limit_concurrency, client_ca=settings.client_ca))
    others = [Listener(config) for config in secondary_configs(settings, deps, files)]
    # A Config has .ssl only once loaded, and only with a certificate: getattr, not the attribute.
    contexts: list[ssl.SSLContext] = [context for server in [main, *others]
                                      if (context := getattr(server.config, "ssl", None)) is not None]
    background = _watchers(settings, deps, files, contexts, certificate)
    handled = _handle_signals([main, *others], stopping)
    log.info("serving", extra={"port": settings.port, "metrics_port": settings.metrics_port,
                               "ci_port": settings.ci_port})
    secondary = [asyncio.create_task(server.serve()) for server in others]
    try:
        await main.serve()
    finally:
        for sig in handled:
            asyncio.get_running_loop().remove_signal_handler(sig)
        for task in background:
            task.cancel()
        for server in others:
            server.should_exit = True
        await asyncio.gather(*secondary, return_exceptions=True)
    return 0


def _handle_signals(servers: list[uvicorn.Server], stopping: Callable[[], None]) -> list[int]:
    """SIGTERM/SIGINT stop every listener together; a second one stops without waiting."""
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        again = all(server.should_exit for server in servers)
        log.info("shutting down" if not again else "shutting down now", extra={"signal": sig.name})
        for server in servers:
            server.force_exit = again
            server.should_exit = True
        stopping()

    handled: list[int] = []
    for sig in _SIGNALS:
        try:
            loop.add_signal_handler(sig, stop, sig)
        except (RuntimeError, ValueError):  # not the main thread (an embedding test): no signals
            continue
        handled.append(sig)
    return handled


def _watchers(settings: Settings, deps: Dependencies, files: TlsFiles,
              contexts: list[ssl.SSLContext], certificate: _Certificate) -> list[asyncio.Task[None]]:
    """Pick up changed files without a restart: certificate, registry list, credentials, CI tokens."""

    def rotate() -> None:
        try:
            expiry = check_serving(files.cert, settings.tls_names)
        except ValueError as exc:
            log.error("rotated TLS certificate is unusable; keeping the old one", extra={"reason": str(exc)})
            return
        rotated = all([reload_into(context, files) for context in contexts])
        if rotated:
            certificate.replaced(expiry.timestamp())
        (log.info if rotated else log.error)(
            "TLS certificate reloaded" if rotated else "rotated TLS certificate is unusable; keeping the old one",
            extra={"cert": str(files.cert)},
        )

    watches: list[tuple[list[Path], Callable[[], object]]] = [([files.cert, files.key], rotate)]
    if (config := settings.config) is not None:
        watches.append(([config], lambda: deps.config.apply_file(config)))
    if settings.secrets_dir is not None:
        watches.append(([settings.secrets_dir], deps.tokens.invalidate))
    if settings.ci_port and (ci_tokens := settings.ci_tokens) is not None:
        watches.append(([ci_tokens], lambda: deps.ci_tokens.apply_file(ci_tokens)))
    return [
        asyncio.create_task(filewatch.watch(paths, callback, interval=settings.file_poll_seconds))
        for paths, callback in watches
    ] + [asyncio.create_task(certificate.watch(settings.file_poll_seconds))]
