"""Namespace churn at scale: 10,000 namespaces admitted, deleted, and an hour later.

Runs tests/support/churn.py's scenario (the one tests/test_lifecycle.py runs with 600): a third
of the namespaces hold a foreign Secret with regcred's name, a third fail their first write and
are repaired in the background. Prints what regcred's own objects (tracemalloc, webhook/ only)
and the whole process (VmRSS, which includes the fake API server in the same process) hold
before, at the peak and after.

    python3 -m bench.churn [--namespaces 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from tests.support.churn import churn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.churn")
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="300 namespaces, for CI")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count = 300 if args.smoke else args.namespaces
    logging.getLogger("webhook").setLevel(logging.ERROR)  # a third of the writes fail on purpose
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
