"""Scale: 10,000 namespaces x 5 registries of managed Secrets; memory, sync, a full refresh.

    python3 -m bench.scale [--smoke] [--namespaces N] [--kube-qps 20] [--kube-burst 40] [--pairs 8] [--no-pin]

The fake Kubernetes API server (this process) is seeded with 50,000 current managed Secrets
(with the managedFields a real API server adds), then ``regcred serve`` starts in its own
process, so the memory read from /proc/<pid>/status is regcred's alone and no GIL is shared.

1. time from spawn to /readyz (every cache synced), and VmRSS / VmHWM then (target <= 200 MB);
2. warm-path admissions (``bench.common``'s 3-container Pod in a namespace whose Secrets are
   fresh) from a load generator process, closed loop: idle, then during a refresh pass that
   checks every Secret and writes none (woken by an unrelated credentials Secret);
3. a full refresh: the bulk registries' credentials rotate, so all 50,000 Secrets are
   rewritten at the configured --kube-qps. Meanwhile one load run alternates windows with the
   refresh paused (its 4 writers' requests held by the fake API server for 3 s) and running:
   adjacent windows share this shared machine's noise, so their ratio means something. Then
   the same at saturation (``--saturating-connections``), reported, not judged;
4. the pass's duration from regcred's metrics, or, if it outlives ``--window`` more seconds,
   its write rate then and the duration that rate implies.

Target: a full refresh adds at most 0.5 ms to the warm-path p99 (the target since 7 December
2026; 1.2x before, still printed beside it), at a load regcred serves with CPU to spare: one
closed-loop connection keeps it at about 85% of its CPU (some 3,000 admissions a second). At
four connections its CPU is at 100%, every admission queues behind the others, and any extra
work at all, a log line included, lengthens the queue: that is a throughput figure (the
warm-path benchmark's baseline ratios), reported here beside it.
regcred runs on a CPU of its own by default, as in the cold burst: in a cluster the API
server, which here serves 20 writes a second and their watch events, is not on the webhook's
CPU. ``--smoke``: 200 namespaces, well under a minute; it fails only on untimed targets (memory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import common
from bench._cluster import OWN, pin_cpus, print_verdict, run_load, set_registries, start_regcred
from tests.fakes.apiserver import FakeApiServer
from tests.fakes.apiserver_resources import lookup
from tests.support.kube import b64
from webhook.providers import Credential
from webhook.pullsecrets import build_pull_secret
from webhook.registries import parse_registries

BULK = 5
BULK_CREDS = "bench-bulk"
REFRESH_ALLOWANCE_MS = 0.5  # what a full refresh may add to the warm p99 (issue 17)
# What a real API server keeps on every object a client wrote: regcred must not hold it.
MANAGED_FIELDS = [{"manager": "regcred", "operation": "Update", "apiVersion": "v1", "time": "2026-11-27T10:00:00Z",
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:.dockerconfigjson": {}},
                   "f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {},
                                               "f:regcred.io/registry": {}}}, "f:type": {}}}]


def registries_yaml() -> str:
    bulk = "".join(f"  - {{id: bulk-{i}, url: registry-{i}.example.com/team, type: basic, secretRef: {BULK_CREDS}}}\n"
                   for i in range(BULK))
    return common.REGISTRIES_YAML + bulk


def seed(api: FakeApiServer, namespaces: int) -> float:
    """Namespaces and current Secrets straight into the fake's store (no HTTP); returns seconds."""
    started = time.perf_counter()
    registries = {r.id: r for r in parse_registries(registries_yaml()).registries}
    secrets, kinds = lookup("secrets"), lookup("namespaces")
    bulk = Credential("bulk-user", "bulk-password-1")
    with api.store.lock:
        for name, data in {**common.CREDENTIALS, BULK_CREDS: {"username": "bulk-user",
                                                            "password": "bulk-password-1"}}.items():
            api.store.create(secrets, OWN, {"metadata": {"name": name, "namespace": OWN},
                                            "data": {k: b64(v) for k, v in data.items()}})
        for n in range(namespaces):
            namespace = f"ns-{n:05d}"
            api.store.create(kinds, None, {"metadata": {"name": namespace, "labels": {"team": f"t{n % 50}"}}})
            for i in range(BULK):
                secret = build_pull_secret(registries[f"bulk-{i}"], bulk, namespace)
                secret["metadata"]["managedFields"] = MANAGED_FIELDS
                api.store.create(secrets, namespace, secret)
        api.store.create(kinds, None, {"metadata": {"name": common.NAMESPACE}})
        for registry_id, data in common.CREDENTIALS.items():
            credential = Credential(data["username"], data["password"])
            api.store.create(secrets, common.NAMESPACE,
                             build_pull_secret(registries[registry_id], credential, common.NAMESPACE))
    return time.perf_counter() - started


def warm_load(regcred, count: int, connections: int) -> dict:
    bodies = [common.review_body(f"scale-{i}").decode() for i in range(64)]
    result = run_load({"mode": "closed", "port": regcred.port, "ca": str(regcred.ca), "bodies": bodies,
                       "connections": connections, "count": count, "duration": 120}, timeout=300)
    latencies = result["latencies"]
    return {"requests": len(latencies), "non_200": sum(v for k, v in result["statuses"].items() if k != "200"),
            "req_per_s": round(len(latencies) / result["wall_s"], 1),
            **{k: round(v * 1000, 2) for k, v in common.summary(latencies).items()},
            # A closed loop hides a stalled event loop (only the requests in flight wait): max shows it.
            "max": round(max(latencies) * 1000, 1)}


def passes(regcred) -> tuple[float, float]:
    return (regcred.metric("regcred_refresh_duration_seconds_count"),
            regcred.metric("regcred_refresh_duration_seconds_sum"))


def wait_pass(regcred, before: tuple[float, float], seconds: float) -> float | None:
    """Seconds the next completed refresh pass took, or None if none completed in ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        count, total = passes(regcred)
        if count > before[0]:
            return (total - before[1]) / (count - before[0])
        time.sleep(0.2)
    return None


def relist(api: FakeApiServer, regcred, secrets: int) -> dict:
    """Every watch cut while the history moves past it (an API server restart after compaction):
    each informer gets 410 and relists. Returns how long the managed Secrets took and VmHWM."""
    api.reset_log()
    api.hang_next(10, seconds=1.0, verb="watch")  # the reconnects wait while the history rolls over
    api.drop_watches()
    for i in range(1100):  # more events than the fake keeps (1000)
        api.put_object("secrets", {"metadata": {"name": "noise", "namespace": "default"}, "data": {"i": b64(str(i))}})
    started, pages = time.monotonic(), -(-secrets // 500)

    def cluster_lists() -> list:
        return [r for r in api.requests if r.verb == "list" and r.resource == "secrets" and r.namespace is None]

    while len(cluster_lists()) < pages and time.monotonic() - started < 120:
        time.sleep(0.1)
    done = cluster_lists()
    time.sleep(1.0)  # the last page is decoded and swapped in after its request ends
    return {"relist_pages": len(done), "relist_s": round(done[-1].time - done[0].time, 2) if done else None,
            "VmHWM_after_relist_mib": round(regcred.memory()["VmHWM"], 1)}


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    figures: dict = {"namespaces": args.namespaces, "managed_secrets": args.namespaces * BULK + len(common.CREDENTIALS),
                     "kube_qps": args.kube_qps, "kube_burst": args.kube_burst, "connections": args.connections,
                     "saturating_connections": args.saturating_connections}
    regcred_cpus, _ = pin_cpus() if args.pin else (None, None)
    figures["regcred_cpus"] = sorted(regcred_cpus) if regcred_cpus else "shared"
    with FakeApiServer() as api:
        api.add_namespace(OWN)
        set_registries(api, registries_yaml())
        figures["seed_s"] = round(seed(api, args.namespaces), 1)
        regcred = start_regcred(api, workdir, timeout=600, cpus=regcred_cpus, args=(
            "--kube-qps", str(args.kube_qps), "--kube-burst", str(args.kube_burst), "--refresh-interval", "3600"))
        try:
            figures["ready_after_s"] = round(regcred.ready_after, 2)
            figures.update({f"{k}_after_sync_mib": round(v, 1) for k, v in regcred.memory().items()})
            wait_pass(regcred, (0, 0), 60)  # the start-up pass (it may have run before the sync)
            figures.update(relist(api, regcred, args.namespaces * BULK))
            warm_load(regcred, args.requests // 4, args.connections)  # warm-up, discarded
            figures["idle"] = warm_load(regcred, args.requests, args.connections)
            # An unrelated credentials Secret changing wakes the refresher: a pass that writes nothing,
            # started once the load runs (the load generator takes a moment to connect).
            before = passes(regcred)
            with ThreadPoolExecutor(1) as pool:
                load = pool.submit(warm_load, regcred, args.requests, args.connections)
                time.sleep(1.5)
                api.put_object("secrets", {"metadata": {"name": "unrelated", "namespace": OWN},
                                           "data": {"k": b64("v")}})
                figures["during_noop_pass"] = load.result()
            noop = wait_pass(regcred, before, 60)
            figures["noop_pass_s"] = None if noop is None else round(noop, 2)
            figures.update(full_refresh(api, regcred, args))
            if args.saturating_connections:
                saturated = paired(api, regcred, args, args.saturating_connections)
                figures.update({f"saturated_{key.removeprefix('refresh_')}": value
                                for key, value in saturated.items() if key.startswith("refresh_")})
            figures["VmHWM_end_mib"] = round(regcred.memory()["VmHWM"], 1)
        finally:
            regcred.stop()
    return figures


def full_refresh(api: FakeApiServer, regcred, args: argparse.Namespace) -> dict:
    """Rotate the bulk credentials; the warm path with that refresh paused and running; its rate."""
    before = passes(regcred)
    api.reset_log()
    api.put_object("secrets", {"metadata": {"name": BULK_CREDS, "namespace": OWN},
                               "data": {"username": b64("bulk-user"), "password": b64("bulk-password-2")}})
    profiler = None
    if args.profile:  # py-spy on regcred while its refresh runs (diagnosis, not figures)
        profiler = subprocess.Popen(["py-spy", "record", "-o", args.profile, "-p", str(regcred.pid), "-d", "10",
                                     "-f", "speedscope", "--threads", "--gil"], stdout=subprocess.DEVNULL)
    result = paired(api, regcred, args, args.connections)
    if profiler is not None:
        profiler.wait(timeout=60)
    counted_from, updates_before = time.monotonic(), api.count(verb="update", resource="secrets")
    seconds = wait_pass(regcred, before, args.window)
    result["full_refresh_complete"] = seconds is not None
    if seconds is not None:
        result["full_refresh_s"] = round(seconds, 1)  # includes the paused windows
    else:  # measured on a window without pauses, so the rate is the refresher's own
        rate = (api.count(verb="update", resource="secrets") - updates_before) / (time.monotonic() - counted_from)
        result["full_refresh_writes_per_s"] = round(rate, 1)
        result["full_refresh_projected_s"] = round(args.namespaces * BULK / rate) if rate else None
    return result


# The refresher writes through 4 workers; hanging their next 4 updates pauses it without
# stopping it. Below regcred's 5 s request timeout, so nothing fails.
WORKERS, HANG, ACTIVE = 4, 3.0, 3.0


def paired(api: FakeApiServer, regcred, args: argparse.Namespace, connections: int) -> dict:
    """Warm-path latency with the refresh paused and running, in alternating windows of one
    load run: this machine is shared and noisy, and adjacent windows see the same noise."""
    bodies = [common.review_body(f"scale-{i}").decode() for i in range(64)]
    job = {"mode": "closed", "port": regcred.port, "ca": str(regcred.ca), "bodies": bodies,
           "connections": connections, "count": 10**6, "duration": args.pairs * (HANG + ACTIVE + 0.5) + 1}
    paused: list[tuple[float, float, float]] = []
    running: list[tuple[float, float, float]] = []
    cpu = {"paused": 0.0, "running": 0.0}
    with ThreadPoolExecutor(1) as pool:
        load = pool.submit(run_load, job, job["duration"] + 60)
        time.sleep(1.0)  # the load generator's start-up and connections
        for _ in range(args.pairs):
            armed = time.time()
            rule = api.hang_next(WORKERS, seconds=HANG, verb="update", resource="secrets")
            while rule.remaining > 0 and time.time() < armed + 2:
                time.sleep(0.005)
            if rule.remaining > 0:  # the pass is over: nothing left to pause
                api.clear_faults()
                break
            paused.append((time.time() + 0.05, armed + HANG - 0.05, regcred.cpu_seconds()))
            time.sleep(max(0.0, armed + HANG - time.time() - 0.05))
            cpu["paused"] += regcred.cpu_seconds() - paused[-1][2]
            time.sleep(0.35)  # the hung writes land
            running.append((time.time(), time.time() + ACTIVE, regcred.cpu_seconds()))
            time.sleep(ACTIVE)
            cpu["running"] += regcred.cpu_seconds() - running[-1][2]
        result = load.result()
    figures = {"refresh_paused": _within(result, paused), "refresh_running": _within(result, running),
               "writes_during_load": api.count(verb="update", resource="secrets")}
    for name, windows in (("paused", paused), ("running", running)):
        # regcred's CPU per second, and per admission served, in each kind of window
        wall, window = sum(high - low for low, high, _ in windows), figures[f"refresh_{name}"]
        window["regcred_cpu_per_s"] = round(cpu[name] / wall, 2) if wall else None
        served = window["requests"]
        window["regcred_cpu_ms_per_admission"] = round(cpu[name] / served * 1000, 2) if served else None
    return figures


def _within(result: dict, windows: list[tuple[float, float, float]]) -> dict:
    """Latency figures of the requests that started and ended inside one of ``windows``."""
    latencies = [latency for start, latency in zip(result["starts"], result["latencies"], strict=True)
                 if any(low <= start and start + latency <= high for low, high, _ in windows)]
    if not latencies:
        return {"requests": 0}
    # p99.9 too: a change that gathers background work into fewer, longer pauses can move the
    # p99 down and the slowest admissions up.
    return {"requests": len(latencies), **{k: round(v * 1000, 2) for k, v in common.summary(latencies).items()},
            "p99.9": round(common.percentile(latencies, 99.9) * 1000, 2), "max": round(max(latencies) * 1000, 1)}


def verdict(figures: dict) -> list[tuple[str, str, bool, bool]]:
    """(name, figure and target, met, timed): a smoke run fails only on untimed targets."""
    paused, running = figures["refresh_paused"].get("p99"), figures["refresh_running"].get("p99")
    rss = figures["VmRSS_after_sync_mib"]
    checks = [("resident memory after sync", f"{rss} MiB (target <= 200 MB = 190.7 MiB)",
               rss <= 200e6 / 2**20, False)]
    if paused and running:
        # Issue 17 restated issue 7's ratio as an absolute allowance: a ratio judges a faster
        # warm path more harshly for the same added time. The ratio stays beside it.
        checks.append(("warm p99 with the full refresh running", f"{running} ms vs paused {paused} ms = "
                       f"{running - paused:+.2f} ms (target <= +{REFRESH_ALLOWANCE_MS} ms), {running / paused:.2f}x",
                       running - paused <= REFRESH_ALLOWANCE_MS, True))
    else:
        checks.append(("warm p99 with the full refresh running", "no window measured", False, True))
    return checks


def saturated_ratio(figures: dict) -> str | None:
    """The same ratio at saturation, for the reader: not a target (see the module docstring)."""
    paused, running = figures.get("saturated_paused", {}).get("p99"), figures.get("saturated_running", {}).get("p99")
    if not (paused and running):
        return None
    return (f"at saturation ({figures['saturating_connections']} connections): warm p99 {running} ms vs "
            f"paused {paused} ms = {running / paused:.2f}x (reported, not judged)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 namespaces, 2 window pairs, under a minute")
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--kube-qps", type=float, default=20.0, help="regcred --kube-qps (shipped default 20)")
    parser.add_argument("--kube-burst", type=int, default=40, help="regcred --kube-burst (shipped default 40)")
    parser.add_argument("--window", type=float, default=15.0,
                        help="seconds, after the paired windows, to wait for the pass or measure its write rate")
    parser.add_argument("--requests", type=int, default=3000, help="warm-path admissions per phase")
    parser.add_argument("--connections", type=int, default=1,
                        help="load generator connections for the idle, no-op and full-refresh phases (the target)")
    parser.add_argument("--saturating-connections", type=int, default=4,
                        help="connections for a second, saturating run of the full refresh (reported; 0 skips it)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="regcred on a CPU of its own, everything else on the others (needs 2+ CPUs)")
    parser.add_argument("--pairs", type=int, default=8, help="paused/running window pairs during the refresh")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", metavar="PATH", help="py-spy regcred during the refresh (speedscope JSON)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.namespaces, args.requests, args.pairs, args.window = 200, 500, 2, 3.0
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        figures = measure(args, Path(tmp))
    print(json.dumps(figures, indent=None if not args.json else 2) if args.json else
          "\n".join(f"{key:30} {value}" for key, value in figures.items()))
    if (saturated := saturated_ratio(figures)) is not None:
        print(f"INFO  {saturated}")
    return print_verdict(verdict(figures), args.smoke)


if __name__ == "__main__":
    sys.exit(main())
