"""The server side of the warm-path benchmark: regcred's app over TLS, exactly as shipped.

``python3 -m bench.warm_server --port N --certs DIR`` (started by ``bench.warm_path``). The app is
``create_app`` served with ``webhook.listeners.tls_listener_config``, as ``regcred serve`` does; the
pull Secrets of every registry are made fresh in the benchmark namespace before the listener
opens, so each admission is a warm one. One route is added to the same app and server: the
baseline, ``POST /baseline``, which reads the body and answers a fixed allowed AdmissionReview,
so the two differ only by what regcred does per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import build_deps, review, warm
from webhook import logs
from webhook.app import create_app
from webhook.certs import ensure_dev_certificate
from webhook.listeners import tls_listener_config
from webhook.server import tuned_gc
from webhook.settings import Settings


def baseline_route() -> Route:
    uid = review()["request"]["uid"]
    fixed = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": uid, "allowed": True}}, separators=(",", ":")).encode()

    async def baseline(request: Request) -> Response:
        await request.body()  # the same body is received and read; nothing is done with it
        return Response(fixed, media_type="application/json")

    return Route("/baseline", baseline, methods=["POST"])


async def serve(port: int, certs: Path) -> None:
    settings = Settings(host="127.0.0.1", port=port, metrics_port=0, log_level="warning")
    logs.configure(settings.log_level)
    deps = build_deps()
    await warm(deps)
    app = create_app(settings, deps)
    app.router.routes.append(baseline_route())
    files = ensure_dev_certificate(certs, ["localhost", "127.0.0.1"])
    with tuned_gc():  # as regcred serve does
        await uvicorn.Server(tls_listener_config(app, port, files, settings)).serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.warm_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.certs))


if __name__ == "__main__":
    main()
