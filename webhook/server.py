"""Run ``regcred serve``: the TLS admission listener and the plain-HTTP metrics listener."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from webhook import logs
from webhook.app import Dependencies, create_app, create_metrics_app, default_dependencies
from webhook.certs import TlsFiles, check_pair, ensure_dev_certificate
from webhook.settings import Settings

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
    deps.readiness.set("certificate loaded", True)
    main = uvicorn.Server(uvicorn.Config(
        create_app(settings, deps), host=settings.host, port=settings.port,
        ssl_certfile=str(files.cert), ssl_keyfile=str(files.key),
        log_config=None, access_log=False, timeout_graceful_shutdown=20,
    ))
    metrics = None
    if settings.metrics_port:
        metrics = uvicorn.Server(uvicorn.Config(
            create_metrics_app(deps), host=settings.host, port=settings.metrics_port,
            log_config=None, access_log=False,
        ))
    log.info("serving", extra={"port": settings.port, "metrics_port": settings.metrics_port})
    metrics_task = asyncio.create_task(metrics.serve()) if metrics else None
    await main.serve()
    if metrics and metrics_task:
        metrics.should_exit = True
        await metrics_task
    return 0
