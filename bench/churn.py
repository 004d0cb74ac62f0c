"""Namespace churn at scale: 10,000 namespaces admitted, deleted, and later.

Two runs of one scenario (a third of the namespaces hold a foreign Secret with regcred's name,
a third fail their first write and are repaired in the background), ``--rounds`` times:

* in process (tests/support/churn.py, which tests/test_lifecycle.py runs with 400 three
  times): what regcred's own objects hold (tracemalloc, webhook/ only) and the blocks the
  whole process holds, before, at the peak, and once the clock has moved an hour past every
  time to live;
* ``--process``: ``regcred serve`` as shipped, in its own process on the fake API server,
  admissions over TLS from a third process; its memory before, at the peak, and
  ``--settle`` seconds after the namespaces went (real time: the foreign-Secret memory lives
  60 s) and one more admission (what sweeps the tables); ``--rounds`` times, to show a
  further churn reuses what the first one grew rather than adding to it. Memory is VmRSS and
  what the allocators hold (bench/memprobe: Python's allocated blocks, and glibc's bytes in
  use and held free), because CPython keeps freed memory for reuse and RSS alone cannot tell
  a leak from that.

    python3 -m bench.churn [--namespaces 10000] [--rounds 2] [--process] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

from bench._cluster import OWN, run_load, set_registries, start_regcred
from bench._cluster import review as admission_review
from tests.fakes.apiserver import FakeApiServer
from tests.support.churn import REGISTRY, Held, churn
from tests.support.kube import b64

MEMPROBE = Path(__file__).parent / "memprobe"
REGISTRIES = "registries:\n  - {id: hub, url: docker.io/acme, type: basic, secretRef: hub}\n"


def churn_process(count: int, settle: float, rounds: int = 2) -> dict:
    """The memory of ``regcred serve`` through ``rounds`` churns of ``count`` new namespaces each;
    see the module docstring. CPython keeps freed memory for reuse, so the question a further
    round answers is whether the process grows again, not whether RSS falls."""
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp, FakeApiServer() as api:
        api.add_namespace(OWN)
        api.put_object("secrets", {"metadata": {"name": "hub", "namespace": OWN},
                                   "data": {"username": b64("u"), "password": b64("p")}})
        set_registries(api, REGISTRIES)
        probe = Path(tmp) / "memprobe.json"
        path = os.pathsep.join(filter(None, [str(MEMPROBE), os.environ.get("PYTHONPATH")]))
        regcred = start_regcred(api, Path(tmp), env={"PYTHONPATH": path, "REGCRED_BENCH_MEMPROBE": str(probe)})
        try:
            for namespace in ("warm-up", "after"):
                api.add_namespace(namespace)
            _admit(regcred, ["warm-up"])
            time.sleep(2)
            baseline = _memory(regcred, probe)
            rounds_memory = []
            statuses: dict[str, int] = {}
            for round_ in range(rounds):
                names = [f"churn-{round_}-{i}" for i in range(count)]
                for i, namespace in enumerate(names):
                    api.add_namespace(namespace)
                    if i % 3 == 1:
                        api.put_object("secrets", {"metadata": {"name": REGISTRY.secret_name}}, namespace)
                    if i % 3 == 2:
                        api.fail_next(1, 500, "create", "secrets", namespace=namespace)
                time.sleep(2)  # the namespace watch delivers them
                for status, n in _admit(regcred, names).items():
                    statuses[status] = statuses.get(status, 0) + n
                time.sleep(5)  # the failed writes' first repairs
                peak = _memory(regcred, probe)
                for namespace in names:
                    api.delete_object("namespaces", None, namespace)
                    api.finish_namespace_deletion(namespace)
                time.sleep(settle)
                _admit(regcred, ["after"])
                time.sleep(2)
                rounds_memory.append({"churned": peak, "after": _memory(regcred, probe)})
            high_water = regcred.memory()["VmHWM"]
        finally:
            regcred.stop()
    return {"namespaces": count, "rounds": rounds, "admission_statuses": statuses, "settle_s": settle,
            "memory": {"baseline": baseline, "rounds": rounds_memory}, "rss_high_water_mib": round(high_water, 1)}


def _memory(regcred, probe: Path) -> dict:
    """VmRSS (MiB) and what regcred's allocators hold, from bench/memprobe."""
    probe.unlink(missing_ok=True)
    os.kill(regcred.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not probe.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("bench/memprobe did not answer: is it on regcred's PYTHONPATH?")
        time.sleep(0.1)
    figures = json.loads(probe.read_text())
    mib = 1024 * 1024
    return {"rss_mib": round(regcred.memory()["VmRSS"], 1), "python_blocks": figures["blocks"],
            "malloc_in_use_mib": round(figures["malloc_in_use"] / mib, 2),
            "malloc_free_mib": round(figures["malloc_free"] / mib, 2)}


def _admit(regcred, namespaces: list[str]) -> dict:
    bodies = [json.dumps(admission_review(f"u{i}", namespace, [f"docker.io/acme/app:{i % 7}"]))
              for i, namespace in enumerate(namespaces)]
    job = {"mode": "closed", "port": regcred.port, "ca": str(regcred.ca), "bodies": bodies,
           "connections": min(8, len(bodies)), "count": len(bodies), "duration": 600}
    return run_load(job, timeout=900)["statuses"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.churn")
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="300 namespaces, for CI")
    parser.add_argument("--process", action="store_true", help="regcred serve in its own process: its memory")
    parser.add_argument("--settle", type=float, default=75.0, help="--process: seconds after the deletions")
    parser.add_argument("--rounds", type=int, default=2, help="churns one after another")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count = 300 if args.smoke else args.namespaces
    logging.getLogger("webhook").setLevel(logging.ERROR)  # a third of the writes fail on purpose
    if args.process:
        print(json.dumps(churn_process(count, 5.0 if args.smoke else args.settle, args.rounds), indent=2))
        return
    started = time.perf_counter()
    figures = churn(count, args.rounds)
    mib = 1024 * 1024

    def held(h: Held) -> dict:
        return {"webhook_bytes": h.webhook_bytes, "python_blocks": h.blocks, "rss_mib": round(h.rss / mib, 1)}

    result = {
        "namespaces": count,
        "seconds": round(time.perf_counter() - started, 1),
        "baseline": held(figures.baseline),
        "rounds": [{"churned": held(r.peak), "after": held(r.after)} for r in figures.rounds],
        "webhook_kept_of_last_round": round(figures.kept, 3),
        "blocks_kept_of_last_round": round(figures.regrown, 3) if args.rounds > 1 else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.rounds} x {count} namespaces in {result['seconds']} s")
    for number, r in enumerate(figures.rounds, 1):
        print(f"round {number}: webhook/ objects {r.peak.webhook_bytes / mib:.2f} MiB at the peak, "
              f"{r.after.webhook_bytes / mib:.2f} after; Python blocks {r.peak.blocks:,} at the peak, "
              f"{r.after.blocks:,} after (baseline {figures.baseline.blocks:,})")
    print(f"webhook/ objects kept of the last round: {figures.kept:.1%}")
    if args.rounds > 1:
        print(f"whole-process blocks kept of the last round: {figures.regrown:.1%}")


if __name__ == "__main__":
    main()
