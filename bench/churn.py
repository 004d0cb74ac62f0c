"""Namespace churn at scale: 10,000 namespaces admitted, deleted, and later.

Two runs of one scenario (a third of the namespaces hold a foreign Secret with regcred's name,
a third fail their first write and are repaired in the background):

* in process (tests/support/churn.py, which tests/test_lifecycle.py runs with 600): what
  regcred's own objects hold (tracemalloc, webhook/ only) before, at the peak, and once the
  clock has moved an hour past every time to live;
* ``--process``: ``regcred serve`` as shipped, in its own process on the fake API server,
  admissions over TLS from a third process; its VmRSS before, at the peak, and
  ``--settle`` seconds after the namespaces went (real time: the foreign-Secret memory lives
  60 s) and one more admission (what sweeps the tables); twice, to show a second churn
  reuses what the first one grew rather than adding to it.

    python3 -m bench.churn [--namespaces 10000] [--process] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from bench._cluster import OWN, run_load, set_registries, start_regcred
from bench._cluster import review as admission_review
from tests.fakes.apiserver import FakeApiServer
from tests.support.churn import REGISTRY, churn
from tests.support.kube import b64

REGISTRIES = "registries:\n  - {id: hub, url: docker.io/acme, type: basic, secretRef: hub}\n"


def churn_process(count: int, settle: float, rounds: int = 2) -> dict:
    """VmRSS (MiB) of ``regcred serve`` through ``rounds`` churns of ``count`` new namespaces each;
    see the module docstring. CPython keeps freed memory for reuse, so the question a second
    round answers is whether the process grows again, not whether RSS falls."""
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp, FakeApiServer() as api:
        api.add_namespace(OWN)
        api.put_object("secrets", {"metadata": {"name": "hub", "namespace": OWN},
                                   "data": {"username": b64("u"), "password": b64("p")}})
        set_registries(api, REGISTRIES)
        regcred = start_regcred(api, Path(tmp))
        try:
            for namespace in ("warm-up", "after"):
                api.add_namespace(namespace)
            _admit(regcred, ["warm-up"])
            time.sleep(2)
            baseline = regcred.memory()["VmRSS"]
            rounds_rss = []
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
                peak = regcred.memory()["VmRSS"]
                for namespace in names:
                    api.delete_object("namespaces", None, namespace)
                    api.finish_namespace_deletion(namespace)
                time.sleep(settle)
                _admit(regcred, ["after"])
                time.sleep(2)
                rounds_rss.append({"churned": round(peak, 1), "after": round(regcred.memory()["VmRSS"], 1)})
            high_water = regcred.memory()["VmHWM"]
        finally:
            regcred.stop()
    return {"namespaces": count, "rounds": rounds, "admission_statuses": statuses, "settle_s": settle,
            "rss_mib": {"baseline": round(baseline, 1), "rounds": rounds_rss, "high_water": round(high_water, 1)}}


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
    parser.add_argument("--process", action="store_true", help="regcred serve in its own process: its VmRSS")
    parser.add_argument("--settle", type=float, default=75.0, help="--process: seconds after the deletions")
    parser.add_argument("--rounds", type=int, default=2, help="--process: churns one after another")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count = 300 if args.smoke else args.namespaces
    logging.getLogger("webhook").setLevel(logging.ERROR)  # a third of the writes fail on purpose
    if args.process:
        print(json.dumps(churn_process(count, 5.0 if args.smoke else args.settle, args.rounds), indent=2))
        return
    started = time.perf_counter()
    figures = churn(count)
    mib = 1024 * 1024
    result = {
        "namespaces": count,
        "seconds": round(time.perf_counter() - started, 1),
        "webhook_bytes": {"baseline": figures.baseline, "churned": figures.churned, "after": figures.after},
        "kept_of_added": round(figures.kept, 3),
        "rss_mib": {"baseline": round(figures.rss_baseline / mib, 1), "churned": round(figures.rss_churned / mib, 1),
                    "after": round(figures.rss_after / mib, 1)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{count} namespaces in {result['seconds']} s")
    print(f"webhook/ objects: {figures.baseline / mib:.2f} MiB before, {figures.churned / mib:.2f} at the peak, "
          f"{figures.after / mib:.2f} after ({result['kept_of_added']:.1%} of what the churn added)")
    rss = result["rss_mib"]
    print(f"VmRSS (with the fake API server): {rss['baseline']} MiB before, {rss['churned']} at the peak, "
          f"{rss['after']} after")


if __name__ == "__main__":
    main()
