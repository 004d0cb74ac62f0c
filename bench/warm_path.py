"""Warm path: regcred over TLS under load, side by side with a no-op baseline on the same server.

``python3 -m bench.warm_path [--smoke]``. The server (``bench.warm_server``) runs in its own
process; the load comes from Debian's ``wrk`` in another, posting the benchmark review
(``bench.common``) over keep-alive TLS connections to ``/mutate`` (regcred, Secrets already
fresh) and to ``/baseline`` (reads the body, answers a fixed allowed response). Runs are
interleaved (real, baseline, baseline, real, ...) so both see the same noise on a shared
machine; each figure is the median over rounds. Targets (issue 7): at 16 connections
throughput >= 0.7x and p99 <= 1.3x the baseline's; at 1 connection p99 <= baseline p99 + 1 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import MATCHED_SECRETS, cpu_seconds, free_port, review_body, table

CONNECTIONS = (1, 16, 64)
TARGETS = ("mutate", "baseline")
_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open("{body}", "rb"))
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p90=%d p99=%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Run:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_us: float  # server CPU (user + system) per request: steadier than wall time on a busy machine
    errors: int


def start_server(workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.warm_server", "--port", str(port), "--certs", str(workdir / "certs")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base, ca = f"https://127.0.0.1:{port}", workdir / "certs" / "ca.crt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if ca.exists() and httpx.get(f"{base}/healthz", verify=str(ca)).status_code == 200:
                return process, base, ca
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the benchmark server did not start:\n" + (workdir / "server.log").read_text())


def check_answers(base: str, ca: Path) -> None:
    """Both routes must answer what they claim before any of their numbers mean something."""
    body, headers = review_body(), {"content-type": "application/json"}
    with httpx.Client(verify=str(ca)) as client:
        response = client.post(f"{base}/mutate", content=body, headers=headers).json()["response"]
        patch = json.loads(base64.b64decode(response["patch"]))
        if [entry["name"] for entry in patch[0]["value"]] != MATCHED_SECRETS or response.get("warnings"):
            raise RuntimeError(f"/mutate did not patch the warm Pod as expected: {response}")
        if client.post(f"{base}/baseline", content=body, headers=headers).json()["response"]["allowed"] is not True:
            raise RuntimeError("/baseline did not allow")


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, int]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"^WRK (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return {key: int(value) for key, value in (pair.split("=") for pair in found.group(1).split())}


def measure(base: str, script: Path, target: str, connections: int, seconds: int, pid: int) -> Run:
    cpu = cpu_seconds(pid)
    raw = run_wrk(f"{base}/{target}", script, connections, seconds)
    cpu = cpu_seconds(pid) - cpu
    errors = sum(raw[key] for key in ("connect", "read", "write", "status", "timeout"))
    return Run(target, connections, raw["requests"] / (raw["duration_us"] / 1e6),
               raw["p50"] / 1000, raw["p90"] / 1000, raw["p99"] / 1000, cpu * 1e6 / max(raw["requests"], 1), errors)


def interleaved(base: str, script: Path, rounds: int, seconds: int, pid: int) -> list[Run]:
    runs = []
    for round_ in range(rounds):
        for connections in CONNECTIONS:
            # Alternate which goes first, so neither always inherits the other's warm caches.
            for target in TARGETS if round_ % 2 == 0 else reversed(TARGETS):
                runs.append(measure(base, script, target, connections, seconds, pid))
    return runs


def median_run(runs: list[Run], target: str, connections: int) -> Run:
    chosen = [r for r in runs if r.target == target and r.connections == connections]
    return Run(target, connections, *(statistics.median(getattr(r, name) for r in chosen)
                                      for name in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us")),
               sum(r.errors for r in chosen))


def report(runs: list[Run], rounds: int, seconds: int) -> bool:
    rows, verdicts = [], []
    for connections in CONNECTIONS:
        real, base = median_run(runs, "mutate", connections), median_run(runs, "baseline", connections)
        for r in (real, base):
            rows.append([connections, r.target, r.rps, r.p50_ms, r.p90_ms, r.p99_ms, r.cpu_us, r.errors])
        rows.append([connections, "ratio", real.rps / base.rps, real.p50_ms / base.p50_ms,
                     real.p90_ms / base.p90_ms, real.p99_ms / base.p99_ms, real.cpu_us / base.cpu_us, ""])
        if connections == 16:
            verdicts.append(("16 conns: throughput >= 0.7x baseline", real.rps / base.rps, real.rps >= 0.7 * base.rps))
            verdicts.append(("16 conns: p99 <= 1.3x baseline", real.p99_ms / base.p99_ms,
                             real.p99_ms <= 1.3 * base.p99_ms))
        if connections == 1:
            verdicts.append(("1 conn: p99 <= baseline p99 + 1 ms (difference, ms)", real.p99_ms - base.p99_ms,
                             real.p99_ms <= base.p99_ms + 1.0))
    print(f"warm path over TLS, wrk -t1, median of {rounds} interleaved {seconds} s runs per cell (latency in ms)")
    print(table(["conns", "route", "req/s", "p50", "p90", "p99", "server CPU us/req", "errors"], rows))
    for name, value, met in verdicts:
        print(f"{name}: {value:.3g} {'met' if met else 'NOT met'}")
    return sum(r.errors for r in runs) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.warm_path", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: check that everything still works")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=None, help="duration of each wrk run (whole seconds)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.smoke else 6)
    seconds = args.seconds or (1 if args.smoke else 4)
    smoke = args.smoke
    with tempfile.TemporaryDirectory(prefix="regcred-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "review.json").write_bytes(review_body())
        script = workdir / "post.lua"
        script.write_text(_LUA.format(body=workdir / "review.json"))
        process, base, ca = start_server(workdir)
        try:
            check_answers(base, ca)
            for target in TARGETS if not smoke else ():  # warm-up: first connections, first code paths
                measure(base, script, target, 16, 1, process.pid)
            runs = interleaved(base, script, rounds, seconds, process.pid)
            check_answers(base, ca)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0 if report(runs, rounds, seconds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
