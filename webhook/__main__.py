"""The ``regcred`` command: serve, check-config, match, ci-token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from webhook.ci.command import add_ci_token_parser, run_ci_token
from webhook.diagnose.cli import add_check_parsers, run_check, run_explain
from webhook.offline import CHECK_EXIT_CODES, MATCH_EXIT_CODES, check_config, match_images
from webhook.settings import DEFAULT_EXCLUDED, Settings

log = logging.getLogger("webhook")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs (exit codes) keep their line breaks; help lines wrap as usual."""


def _option(parser: argparse.ArgumentParser, flag: str, help: str, *, env: str | None = None,
            default: object = None, shown: str | None = None, **kwargs: Any) -> None:
    """Add ``flag``, its default taken from ``REGCRED_<env>`` when set; the help names both.

    An environment value is a string, which argparse converts (and reports) as if typed on
    the command line: ``REGCRED_PORT=x`` fails like ``--port x``.
    """
    value = os.environ.get(f"REGCRED_{env}") if env else None
    notes = [f"default: {shown if shown is not None else default}"]
    if env:
        notes.append(f"env REGCRED_{env}")
    parser.add_argument(flag, default=value if value else default, help=f"{help} ({'; '.join(notes)})", **kwargs)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the admission webhook over TLS", formatter_class=_HelpFormatter,
                       description="Serve the admission webhook over TLS.\n"
                                   "Flags win over REGCRED_* environment variables, which win over defaults.",
                       epilog="exit codes:\n  0  stopped by SIGTERM or SIGINT\n"
                              "  2  a setting, the certificate, the cluster or the --ci-tokens file is unusable")
    _option(p, "--config", "registry list file (registries.yaml), reloaded when it changes", env="CONFIG",
            type=Path, shown="none; see --registries-configmap")
    _option(p, "--secrets-dir", "credentials as a projected Secret volume: DIR/<secretRef>/<key>",
            env="SECRETS_DIR", type=Path, shown="none")
    _option(p, "--tls-cert", "serving certificate (PEM), reloaded when it changes; with --tls-key",
            env="TLS_CERT", type=Path, shown="none: a development certificate in --dev-certs-dir")
    _option(p, "--tls-key", "private key of --tls-cert (PEM)", env="TLS_KEY", type=Path, shown="none")
    _option(p, "--dev-certs-dir", "where a development certificate is made when no --tls-cert is given",
            env="DEV_CERTS_DIR", type=Path, default="certs/dev")
    _option(p, "--host", "address every listener binds to", env="HOST", default="0.0.0.0")
    _option(p, "--port", "admission port (HTTPS)", env="PORT", type=int, default="10250")
    _option(p, "--metrics-port", "Prometheus /metrics port (plain HTTP); 0 turns it off", env="METRICS_PORT",
            type=int, default="9090")
    _option(p, "--namespace", "regcred's own namespace; never mutated", env="NAMESPACE",
            default=os.environ.get("POD_NAMESPACE"), shown="$POD_NAMESPACE")
    _option(p, "--exclude-namespaces", "comma-separated namespaces never mutated", env="EXCLUDE_NAMESPACES",
            default=",".join(DEFAULT_EXCLUDED))
    _option(p, "--registries-configmap", "read the registry list from this ConfigMap (key registries.yaml) in "
            "regcred's namespace", env="REGISTRIES_CONFIGMAP", shown="none")
    _option(p, "--kubeconfig", "use the cluster of this kubeconfig (in a Pod: the in-cluster config; with only "
            "--registries-configmap: $KUBECONFIG)", env="KUBECONFIG", type=Path, shown="none")
    _option(p, "--kube-qps", "client-side Kubernetes API rate limit, requests per second", env="KUBE_QPS",
            type=float, default="20")
    _option(p, "--kube-burst", "client-side Kubernetes API burst", env="KUBE_BURST", type=int, default="40")
    _option(p, "--leader-elect", "run the refresher only on the replica holding the Lease",
            action=argparse.BooleanOptionalAction, default=True, shown="on")
    _option(p, "--prune", "delete managed Secrets of registries removed from the list",
            action=argparse.BooleanOptionalAction, default=True, shown="on")
    _option(p, "--refresh-interval", "seconds between refresher passes", env="REFRESH_INTERVAL", type=float,
            default="60")
    _option(p, "--ci-port", "serve the CI credentials API over HTTPS on this port", env="CI_PORT", type=int,
            shown="off")
    _option(p, "--ci-tokens", "CI token list file (tokens.yaml); check one with `regcred ci-token check`",
            env="CI_TOKENS", type=Path, shown="none")
    _option(p, "--ci-tokens-secret", "Secret in regcred's namespace holding the CI token list (key tokens.yaml)",
            env="CI_TOKENS_SECRET", shown="none")
    _option(p, "--tls-names", "names the serving certificate must cover, comma-separated (refused otherwise)",
            env="TLS_NAMES", default="", shown="none checked")
    _option(p, "--ci-trusted-proxies", "CIDRs of proxies whose X-Forwarded-For the CI API believes, "
            "comma-separated (loopback included only if listed)", env="CI_TRUSTED_PROXIES", default="",
            shown="none")
    _option(p, "--file-poll-interval", "seconds between checks of --config, --secrets-dir, --ci-tokens and the "
            "TLS files for changes", env="FILE_POLL_INTERVAL", type=float, default="2")
    _option(p, "--webhook-cert-secret", "manage the serving certificate in this Secret of regcred's namespace: "
            "the leader makes and renews a CA and certificate, every replica writes it to --tls-cert/--tls-key",
            env="WEBHOOK_CERT_SECRET", shown="none")
    _option(p, "--webhook-configuration", "MutatingWebhookConfiguration whose caBundle the leader keeps current "
            "(with --webhook-cert-secret)", env="WEBHOOK_CONFIGURATION", shown="none")
    _option(p, "--webhook-cert-sans", "comma-separated DNS names and IP addresses of the managed certificate",
            env="WEBHOOK_CERT_SANS", default="")
    _option(p, "--webhook-cert-validity", "seconds a managed serving certificate is valid (renewed at 2/3)",
            env="WEBHOOK_CERT_VALIDITY", type=float, default=str(365 * 86400))
    _option(p, "--webhook-ca-validity", "seconds the managed CA is valid (rotated at 2/3)",
            env="WEBHOOK_CA_VALIDITY", type=float, default=str(5 * 365 * 86400))
    _option(p, "--log-level", "least severe log level written (JSON lines on stderr)", env="LOG_LEVEL",
            default="info", choices=["debug", "info", "warning", "error"])
    _option(p, "--limit-concurrency", "admission connections and requests in progress at once; more get 503",
            env="LIMIT_CONCURRENCY", type=int, default="2000")
    _option(p, "--body-timeout", "seconds to receive an admission request's body; slower gets 408 and is closed",
            env="BODY_TIMEOUT", type=float, default="5")
    _option(p, "--client-ca", "CA bundle (PEM): the admission port requires a client certificate signed by it "
            "(the API server's, from its AdmissionConfiguration kubeConfigFile)", env="CLIENT_CA", type=Path,
            shown="none: any client")
    _option(p, "--admission-budget", "seconds an admission may wait for Secrets before answering with a warning",
            env="ADMISSION_BUDGET", type=float, default="3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regcred", description="Cluster-wide registry pull credentials.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    add_ci_token_parser(sub)
    add_check_parsers(sub)
    check = sub.add_parser("check-config", help="validate a registry list file",
                           description="Validate a registry list file as the server would.",
                           epilog=CHECK_EXIT_CODES, formatter_class=_HelpFormatter)
    check.add_argument("file", type=Path, metavar="FILE", help="the registry list (registries.yaml) to validate")
    match = sub.add_parser("match", help="explain which registry each image matches",
                           description="Explain which registry each image matches and, with --namespace,\n"
                                       "whether that namespace is granted it.", epilog=MATCH_EXIT_CODES,
                           formatter_class=_HelpFormatter)
    match.add_argument("--config", type=Path, required=True, metavar="FILE",
                       help="the registry list (registries.yaml) to match against (required)")
    match.add_argument("--namespace", help="also say whether this namespace is granted each registry (default: none)")
    match.add_argument("--namespace-labels", default=None, metavar="k=v,...",
                       help="the namespace's labels, to evaluate namespaceSelector; needs --namespace "
                            "(default: none, selectors not evaluated)")
    match.add_argument("images", nargs="+", metavar="IMAGE",
                       help="image references as written in a Pod spec, e.g. nginx or acme/web:1.0")
    match.set_defaults(usage_error=match.error)
    return parser


def _version() -> str:
    try:
        return version("regcred")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        config=args.config, secrets_dir=args.secrets_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
        dev_certs_dir=args.dev_certs_dir, host=args.host, port=args.port, metrics_port=args.metrics_port,
        namespace=args.namespace, exclude_namespaces=args.exclude_namespaces, log_level=args.log_level,
        admission_budget_seconds=args.admission_budget, file_poll_seconds=args.file_poll_interval,
        ci_port=args.ci_port, ci_tokens=args.ci_tokens, ci_tokens_secret=args.ci_tokens_secret,
        ci_trusted_proxies=args.ci_trusted_proxies, tls_names=args.tls_names,
        registries_configmap=args.registries_configmap, kubeconfig=args.kubeconfig,
        in_cluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")), kube_qps=args.kube_qps,
        kube_burst=args.kube_burst, leader_elect=args.leader_elect, prune=args.prune,
        refresh_interval_seconds=args.refresh_interval, webhook_cert_secret=args.webhook_cert_secret,
        webhook_configuration=args.webhook_configuration, webhook_cert_sans=args.webhook_cert_sans,
        webhook_cert_validity_seconds=args.webhook_cert_validity, webhook_ca_validity_seconds=args.webhook_ca_validity,
        limit_concurrency=args.limit_concurrency, body_timeout_seconds=args.body_timeout, client_ca=args.client_ca,
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
        if args.namespace_labels is not None and args.namespace is None:
            args.usage_error("--namespace-labels needs --namespace (the labels are that namespace's)")
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
