"""The ``regcred check`` and ``regcred explain pod`` subcommands: arguments, fetch, print.

Exit codes: 0 all checks pass, 1 some check fails, 2 the cluster cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# The kubernetes client and the providers load in run_check / run_explain: every other
# subcommand (check-config, match) would otherwise pay for them at start.

DEFAULT_NAMESPACE = "regcred-system"
DEFAULT_NAME = "regcred"


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    parser.add_argument("--output", "-o", choices=["text", "json"], default="text")
    parser.add_argument("--no-color", action="store_true", help="plain ok/FAIL marks (the default when not a TTY)")


def add_check_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="check a live install, from the registry list to the managed Secrets")
    _cluster_flags(check)
    check.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE, help="regcred's namespace")
    check.add_argument("--name", default=DEFAULT_NAME,
                       help="the chart's fullname: names the webhook configuration, ConfigMap <name>-registries, "
                            "Service <name>-metrics")
    check.add_argument("--service-account", default=None, help="regcred's ServiceAccount (default: --name)")
    check.add_argument("--webhook-address", default=None, metavar="HOST:PORT",
                       help="verify the serving certificate here (a `kubectl port-forward` to the webhook Service)")
    check.add_argument("--status-url", default=None,
                       help="read /status here instead of through the API server's proxy to the metrics Service")
    explain = sub.add_parser("explain", help="explain why a Pod's images can or cannot be pulled")
    explain.add_argument("kind", choices=["pod"])
    explain.add_argument("pod", metavar="NAME")
    explain.add_argument("-n", "--namespace", required=True, dest="pod_namespace", help="the Pod's namespace")
    explain.add_argument("--regcred-namespace", default=DEFAULT_NAMESPACE, help="regcred's namespace")
    explain.add_argument("--name", default=DEFAULT_NAME, help="the chart's fullname")
    _cluster_flags(explain)


def _color(args: argparse.Namespace) -> bool:
    return not args.no_color and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def run_check(args: argparse.Namespace) -> int:
    from webhook.diagnose import fetch, report
    from webhook.diagnose.checks import run_checks

    try:
        snap = fetch.read(args.kubeconfig, args.context, lambda api: fetch.snapshot(
            api, namespace=args.namespace, name=args.name, service_account=args.service_account or args.name,
            webhook_address=args.webhook_address, status_url=args.status_url))
    except fetch.Unreachable as exc:
        print(f"regcred check: {exc}", file=sys.stderr)
        return 2
    results = run_checks(snap)
    if args.output == "json":
        report.print_json(results, sys.stdout)
    else:
        report.print_text(results, sys.stdout, color=_color(args))
    return report.exit_code(results)


def run_explain(args: argparse.Namespace) -> int:
    from webhook.diagnose import explain as explaining
    from webhook.diagnose import fetch

    where = f"{args.pod_namespace}/{args.pod}"
    try:
        inputs = fetch.read(args.kubeconfig, args.context, lambda api: fetch.explain_inputs(
            api, args.pod_namespace, args.pod, args.regcred_namespace, args.name))
    except fetch.Unreachable as exc:
        print(f"regcred explain: {exc}", file=sys.stderr)
        return 2
    if inputs is None:
        print(f"regcred explain: pod {where} not found", file=sys.stderr)
        return 1
    rows, verdict = explaining.explain(*inputs, time.time())
    if args.output == "json":
        print(json.dumps({"pod": where, "verdict": verdict, "containers": explaining.as_json(rows)}, indent=2))
    else:
        print("\n".join(explaining.render(rows)))
        print(f"\nverdict: {verdict}")
    return 0
