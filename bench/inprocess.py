"""In-process cost of one admission: decode -> match -> patch -> encode, without HTTP.

``python3 -m bench.inprocess [--smoke]``. Two figures, both per review of the benchmark Pod
(``bench.common``) in a namespace whose pull Secrets are already fresh:

* ``core``: the endpoint's own pipeline from request bytes to response bytes
  (``MutateEndpoint.answer``): JSON decode, AdmissionReview validation, image matching, the
  Provisioner's warm check, the patch and the encoded AdmissionReview answer;
* ``asgi``: the whole Starlette app called as an ASGI callable, as uvicorn calls it, minus the
  socket, TLS and HTTP parsing: routing, Request, body streaming and Response on top of ``core``.

Timing is timeit-style: warm-up, then repeats of many calls with each call timed by
``perf_counter_ns``; the report is the median and p90 in microseconds. The garbage collector
stays on, as in the server. Target (issue 7): core median <= 250 us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from bench.common import build_deps, review_body, summary, table, warm
from webhook.app import create_app
from webhook.settings import Settings

TARGET_US = 250.0


def _asgi_call(app, body: bytes) -> Callable[[], Awaitable[bytes]]:
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "https", "path": "/mutate", "raw_path": b"/mutate", "root_path": "",
        "query_string": b"", "server": ("127.0.0.1", 10250), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def call() -> bytes:
        sent: list[dict] = []

        async def receive() -> dict:
            return message

        async def send(event: dict) -> None:
            sent.append(event)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"the app answered {sent[0]['status']}")
        return b"".join(event.get("body", b"") for event in sent[1:])

    return call


def _core_call(app, body: bytes) -> Callable[[], Awaitable[bytes]]:
    endpoint = app.state.mutate

    async def call() -> bytes:
        status, answer = await endpoint.answer(body)
        if status != 200:
            raise RuntimeError(f"the endpoint answered {status}")
        return answer

    return call


async def _time(call: Callable[[], Awaitable[bytes]], repeats: int, number: int) -> list[float]:
    """Per-call times in microseconds, after one repeat of warm-up."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    for repeat in range(repeats + 1):
        for _ in range(number):
            started = clock()
            await call()
            elapsed = clock() - started
            if repeat:
                samples.append(elapsed / 1000)
    return samples


def _check(answer: bytes) -> None:
    """The benchmark must measure a real patch: both matched Secrets added."""
    response = json.loads(answer)["response"]
    if response.get("patchType") != "JSONPatch" or response.get("warnings"):
        raise RuntimeError(f"unexpected answer: {response}")


async def measure(repeats: int, number: int) -> dict[str, dict[str, float]]:
    deps = build_deps()
    await warm(deps)
    app = create_app(Settings(), deps)
    body = review_body()
    results = {}
    for name, make in (("core", _core_call), ("asgi", _asgi_call)):
        call = make(app, body)
        _check(await call())
        results[name] = summary(await _time(call, repeats, number))
    writes = deps.store.store.writes
    if writes != 4:  # the warm-up's four; a warm admission must not write
        raise RuntimeError(f"the warm path wrote Secrets ({writes - 4} writes)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a second or so: check that it still works")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--number", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.smoke else 7)
    number = args.number or (200 if args.smoke else 2000)
    results = asyncio.run(measure(repeats, number))
    rows = [[name, r["p50"], r["p90"], r["p99"]] for name, r in results.items()]
    print(f"in-process admission of one review ({repeats} x {number} calls, microseconds per call)")
    print(table(["path", "median us", "p90 us", "p99 us"], rows))
    core = results["core"]["p50"]
    print(f"core median {core:.0f} us; target <= {TARGET_US:.0f} us: {'met' if core <= TARGET_US else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
