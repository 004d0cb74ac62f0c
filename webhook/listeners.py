"""The listeners of ``regcred serve``: the admission port, the CI port, the metrics port.

Each is a uvicorn server on the httptools protocol with a bounded request head; the admission
and CI ports speak TLS only (1.2 and newer), optionally asking for a client certificate.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from webhook.app import Dependencies, create_metrics_app
from webhook.certs import TlsFiles
from webhook.ci.endpoint import create_ci_app
from webhook.protocol import BoundedHttpToolsProtocol
from webhook.settings import Settings

log = logging.getLogger(__name__)

# In-flight requests get this long after SIGTERM. An admission is bounded by the admission
# budget (3 s) and the API server's timeoutSeconds (5 s in the chart) anyway; a CI request may
# wait on a cloud mint. Plus composition.STOP_SECONDS for the caches and the Lease: within 30 s.
GRACEFUL_SECONDS = 20
# uvicorn's httptools protocol (C, llhttp), named rather than left to uvicorn's "auto", which
# picks h11 wherever httptools is missing. Of uvicorn's two HTTP/1.1 implementations it costs
# less server CPU per admission, 200-300 us less through a real API server (bench/README.md, "Pod
# creation through a real API server"); llhttp has no bound on a request head, so
# webhook/protocol.py restores h11's 16 KiB.
HTTP_IMPLEMENTATION = BoundedHttpToolsProtocol


class Listener(uvicorn.Server):
    """A uvicorn server without signal handlers of its own: ``serve`` handles them once for all.

    Each uvicorn.Server installs handlers while it serves and, on its way out, restores the
    previous ones and raises the caught signal again. With several listeners in one process
    the last restore puts back the default SIGTERM action and the re-raised signal kills the
    process (exit -15) before the Lease is released or the caches stop.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def check_client_ca(path: Path | None) -> None:
    """Raises ValueError naming the file if --client-ca holds no usable CA certificate."""
    if path is None:
        return
    try:
        if not ssl.create_default_context(cafile=str(path)).get_ca_certs():
            raise ssl.SSLError("no CA certificate in it")
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--client-ca {path} is unusable: {exc}") from None


def tls_listener_config(app: Starlette, port: int, files: TlsFiles, settings: Settings,
                        trusted_proxies: tuple[str, ...] = (), *, limit_concurrency: int | None = None,
                        client_ca: Path | None = None) -> uvicorn.Config:
    config = uvicorn.Config(
        app, host=settings.host, port=port, ssl_certfile=str(files.cert), ssl_keyfile=str(files.key),
        http=HTTP_IMPLEMENTATION,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: anything reaching the port
        # through a port-forward or a sidecar could then claim any address. Only the proxies
        # named are believed, and only on the listener that asks for it.
        proxy_headers=bool(trusted_proxies), forwarded_allow_ips=list(trusted_proxies) or None,
        # access_log stays off: a caller can paste a token into a URL, and paths are not audit.
        log_config=None, access_log=False, timeout_graceful_shutdown=GRACEFUL_SECONDS,
        # uvicorn answers 503 once this many connections or requests are open: forged callers
        # cannot pile up work (or request bodies in memory) without bound.
        limit_concurrency=limit_concurrency,
        # Any Pod can reach the webhook Service; with a client CA only callers holding a
        # certificate it signed (the API server) get past the handshake.
        ssl_ca_certs=str(client_ca) if client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
    )
    config.load()  # builds the SSLContext now, so rotation can reload into it
    assert config.ssl is not None  # a certificate file was given
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    return config


def secondary_configs(settings: Settings, deps: Dependencies, files: TlsFiles) -> list[uvicorn.Config]:
    configs = []
    if settings.ci_port:
        app = create_ci_app(deps.config, deps.tokens, deps.ci_tokens, deps.metrics)
        configs.append(tls_listener_config(app, settings.ci_port, files, settings, settings.ci_trusted_proxies))
        if settings.ci_tokens is None and settings.ci_tokens_secret is None:
            log.warning("--ci-port without --ci-tokens or --ci-tokens-secret: no CI token is accepted")
    if settings.metrics_port:
        configs.append(uvicorn.Config(create_metrics_app(deps), host=settings.host, port=settings.metrics_port,
                                      http=HTTP_IMPLEMENTATION, log_config=None, access_log=False,
                                      proxy_headers=False,
                                      timeout_graceful_shutdown=GRACEFUL_SECONDS))
    return configs
