"""The no-op mutating webhook of the API-server benchmark: allows every Pod, patches nothing.

``python3 -m bench.noop_webhook --port N --cert FILE --key FILE`` (started by ``bench.apiserver``).
It is served exactly as regcred's ``/mutate`` is, with ``webhook.listeners.tls_listener_config``
(uvicorn, TLS, the same HTTP implementation), so what separates the two in the benchmark is
what regcred does per admission, not the server around it. The API server refuses an answer
whose uid is not the request's, so the body is decoded, as little as possible: msgspec's typed
decoder reads the uid and skips everything else without building it (regcred's own decoder
works the same way, ``webhook/admission/models.py``). ``--patch JSON`` adds a fixed JSON Patch to
every answer (``bench.apiserver --noop-patches``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhook.certs import TlsFiles
from webhook.listeners import tls_listener_config
from webhook.settings import Settings


class _Request(msgspec.Struct):
    uid: str


class _Review(msgspec.Struct):
    request: _Request


class _Answer(msgspec.Struct, omit_defaults=True):  # patch fields only when set
    uid: str
    allowed: bool
    patchType: str | None = None
    patch: str | None = None  # base64 of a JSON Patch


class _AnswerReview(msgspec.Struct):
    response: _Answer
    apiVersion: str = "admission.k8s.io/v1"
    kind: str = "AdmissionReview"


def create_app(patch: list[dict] | None = None) -> Starlette:
    """``patch``: a fixed JSON Patch sent with every answer (diagnosis: what the API server's
    applying a patch costs, apart from what regcred does to compute one)."""
    extra = {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(patch).encode()).decode()} if patch else {}

    async def mutate(request: Request) -> Response:
        review = msgspec.json.decode(await request.body(), type=_Review)
        answer = _AnswerReview(_Answer(review.request.uid, True, **extra))
        return Response(msgspec.json.encode(answer), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response("ok")

    return Starlette(routes=[Route("/mutate", mutate, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.noop_webhook")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--patch", type=json.loads, help="a JSON Patch to answer with (JSON)")
    args = parser.parse_args()
    settings = Settings(host="127.0.0.1", port=args.port, metrics_port=0, log_level="warning")
    config = tls_listener_config(create_app(args.patch), args.port, TlsFiles(args.cert, args.key), settings)
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
