"""Run ``regcred serve``: the TLS admission listener and the plain-HTTP metrics listener."""

from __future__ import annotations

import asyncio
import logging
import ssl

import uvicorn

from webhook import logs
from webhook.app import Dependencies, create_app, create_metrics_app, default_dependencies
from webhook import filewatch
from webhook.certs import TlsFiles, check_pair, ensure_dev_certificate, reload_into
from webhook.settings import Settings
from webhook.tenancy import NoCluster

log = logging.getLogger(__name__)


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
        log.error("no registry list: give --config FILE; /readyz stays false")
        return
    deps.config.apply_file(settings.config)
    registries = deps.config.registries.registries if deps.config.registries else []
    selectors = [r.id for r in registries if r.namespace_selector is not None]
    if selectors and isinstance(deps.namespaces, NoCluster):
        log.warning("no cluster: namespaceSelector is not evaluated in local mode, namespaces lists are",
                    extra={"registries": selectors})


async def serve(settings: Settings, deps: Dependencies | None = None) -> int:
    logs.configure(settings.log_level)
    deps = deps or default_dependencies(settings)
    load_configuration(settings, deps)
    files = tls_files(settings)
    try:
        check_pair(files.cert, files.key)
    except ValueError as exc:
        log.error(str(exc))
        return 2
    main_config = uvicorn.Config(
        create_app(settings, deps), host=settings.host, port=settings.port,
        ssl_certfile=str(files.cert), ssl_keyfile=str(files.key),
        log_config=None, access_log=False, timeout_graceful_shutdown=20,
    )
    main_config.load()  # builds the SSLContext now, so rotation can reload into it
    main_config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    deps.readiness.set("certificate loaded", True)
    main = uvicorn.Server(main_config)
    background = _watchers(settings, deps, files, main_config.ssl)
    metrics = None
    if settings.metrics_port:
        metrics = uvicorn.Server(uvicorn.Config(
            create_metrics_app(deps), host=settings.host, port=settings.metrics_port,
            log_config=None, access_log=False,
        ))
    log.info("serving", extra={"port": settings.port, "metrics_port": settings.metrics_port})
    metrics_task = asyncio.create_task(metrics.serve()) if metrics else None
    try:
        await main.serve()
    finally:
        for task in background:
            task.cancel()
        if metrics and metrics_task:
            metrics.should_exit = True
            await metrics_task
    return 0


def _watchers(settings: Settings, deps: Dependencies, files: TlsFiles, context: ssl.SSLContext) -> list[asyncio.Task]:
    """Pick up changed files without a restart: certificate, registry list, credentials."""

    def rotate() -> None:
        rotated = reload_into(context, files)
        (log.info if rotated else log.error)(
            "TLS certificate reloaded" if rotated else "rotated TLS certificate is unusable; keeping the old one",
            extra={"cert": str(files.cert)},
        )

    watches = [([files.cert, files.key], rotate)]
    if settings.config is not None:
        watches.append(([settings.config], lambda: deps.config.apply_file(settings.config)))
    if settings.secrets_dir is not None:
        watches.append(([settings.secrets_dir], deps.tokens.invalidate))
    return [
        asyncio.create_task(filewatch.watch(paths, callback, interval=settings.file_poll_seconds))
        for paths, callback in watches
    ]
