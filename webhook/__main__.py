"""The ``regcred`` command: serve, check-config, match, ci-token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from webhook.citokens import add_ci_token_parser, run_ci_token
from webhook.diagnose.cli import add_check_parsers, run_check, run_explain
from webhook.registries import ConfigError, Matcher, parse_registries
from webhook.settings import DEFAULT_EXCLUDED, Settings
from webhook.tenancy import refusal

log = logging.getLogger("webhook")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"REGCRED_{name}", default)


def _int_env(name: str) -> int | None:
    value = _env(name)
    return int(value) if value else None


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the admission webhook over TLS")
    p.add_argument("--config", type=Path, default=_env("CONFIG"), help="registry list file (registries.yaml)")
    p.add_argument("--secrets-dir", type=Path, default=_env("SECRETS_DIR"),
                   help="credentials as a projected Secret volume: DIR/<secretRef>/<key>")
    p.add_argument("--tls-cert", type=Path, default=_env("TLS_CERT"))
    p.add_argument("--tls-key", type=Path, default=_env("TLS_KEY"))
    p.add_argument("--dev-certs-dir", type=Path, default=_env("DEV_CERTS_DIR", "certs/dev"),
                   help="where a development certificate is made when no --tls-cert is given")
    p.add_argument("--host", default=_env("HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(_env("PORT", "10250")))
    p.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "9090")), help="0 turns it off")
    p.add_argument("--namespace", default=_env("NAMESPACE", os.environ.get("POD_NAMESPACE")),
                   help="regcred's own namespace (default: $POD_NAMESPACE); never mutated")
    p.add_argument("--exclude-namespaces", default=_env("EXCLUDE_NAMESPACES", ",".join(DEFAULT_EXCLUDED)),
                   help="comma-separated namespaces never mutated")
    p.add_argument("--registries-configmap", default=_env("REGISTRIES_CONFIGMAP"),
                   help="read the registry list from this ConfigMap (key registries.yaml) in regcred's namespace")
    p.add_argument("--kubeconfig", type=Path, default=_env("KUBECONFIG"),
                   help="use the cluster of this kubeconfig (in a Pod: the in-cluster config; with only "
                        "--registries-configmap: $KUBECONFIG)")
    p.add_argument("--kube-qps", type=float, default=float(_env("KUBE_QPS", "20")), help="client-side API rate limit")
    p.add_argument("--kube-burst", type=int, default=int(_env("KUBE_BURST", "40")), help="client-side API burst")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="run the refresher only on the replica holding the Lease (default on)")
    p.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True,
                   help="delete managed Secrets of registries removed from the list (default on)")
    p.add_argument("--refresh-interval", type=float, default=float(_env("REFRESH_INTERVAL", "60")),
                   help="seconds between refresher passes")
    p.add_argument("--ci-port", type=int, default=_int_env("CI_PORT"),
                   help="serve the CI credentials API over HTTPS on this port (off unless set)")
    p.add_argument("--ci-tokens", type=Path, default=_env("CI_TOKENS"), help="CI token list file (tokens.yaml)")
    p.add_argument("--ci-tokens-secret", default=_env("CI_TOKENS_SECRET"),
                   help="Secret in regcred's namespace holding the CI token list (key tokens.yaml)")
    p.add_argument("--file-poll-interval", type=float, default=float(_env("FILE_POLL_INTERVAL", "2")),
                   help="seconds between checks of --config, --secrets-dir and the TLS files for changes")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"])
    p.add_argument("--admission-budget", type=float, default=float(_env("ADMISSION_BUDGET", "3")),
                   help="seconds an admission may wait for Secrets before answering with a warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regcred", description="Cluster-wide registry pull credentials.")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    add_ci_token_parser(sub)
    add_check_parsers(sub)
    check = sub.add_parser("check-config", help="validate a registry list file")
    check.add_argument("file", type=Path)
    match = sub.add_parser("match", help="explain which registry each image matches")
    match.add_argument("--config", type=Path, required=True)
    match.add_argument("--namespace", help="also say whether this namespace is granted each registry")
    match.add_argument("--namespace-labels", default=None, metavar="k=v,...",
                       help="the namespace's labels, for namespaceSelector (without it selectors are not evaluated)")
    match.add_argument("images", nargs="+", metavar="IMAGE")
    return parser


def check_config(file: Path) -> int:
    try:
        registries = parse_registries(file.read_text())
    except OSError as exc:
        print(f"{file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{file}: {error}", file=sys.stderr)
        return 1
    print(f"OK ({len(registries.registries)} registries)")
    return 0


def match_images(config: Path, images: list[str], namespace: str | None = None, labels: str | None = None) -> int:
    try:
        matcher = Matcher(parse_registries(config.read_text()))
        namespace_labels = _parse_labels(labels)
    except (OSError, ConfigError, ValueError) as exc:
        print(f"{config}: {getattr(exc, 'errors', None) or exc}", file=sys.stderr)
        return 1
    rows = [("IMAGE", "NORMALIZED", "REGISTRY") + (("GRANTED",) if namespace else ())]
    for image in images:
        found = matcher.match(image)
        row = (image, found.normalized or f"invalid: {found.error}", found.registry.id if found.registry else "-")
        if namespace:
            why = refusal(found.registry, namespace, namespace_labels) if found.registry else "-"
            row += ("yes" if why is None else why if why == "-" else f"no: {why}",)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _parse_labels(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    pairs = [part.strip() for part in text.split(",") if part.strip()]
    if any("=" not in pair for pair in pairs):
        raise ValueError("--namespace-labels takes k=v pairs separated by commas")
    return dict(pair.split("=", 1) for pair in pairs)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        config=args.config, secrets_dir=args.secrets_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
        dev_certs_dir=args.dev_certs_dir, host=args.host, port=args.port, metrics_port=args.metrics_port,
        namespace=args.namespace, exclude_namespaces=args.exclude_namespaces, log_level=args.log_level,
        admission_budget_seconds=args.admission_budget, file_poll_seconds=args.file_poll_interval,
        ci_port=args.ci_port, ci_tokens=args.ci_tokens, ci_tokens_secret=args.ci_tokens_secret,
        registries_configmap=args.registries_configmap, kubeconfig=args.kubeconfig,
        in_cluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")), kube_qps=args.kube_qps,
        kube_burst=args.kube_burst, leader_elect=args.leader_elect, prune=args.prune,
        refresh_interval_seconds=args.refresh_interval,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "ci-token":
        return run_ci_token(args)
    if args.command == "check":
        return run_check(args)
    if args.command == "explain":
        return run_explain(args)
    if args.command == "match":
        return match_images(args.config, args.images, args.namespace, args.namespace_labels)
    try:
        settings = _settings(args)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"regcred serve: {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    from webhook.server import serve

    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
