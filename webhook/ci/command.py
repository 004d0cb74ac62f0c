"""``regcred ci-token``: create a CI token (shown once) and check a tokens file offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook.ci.tokens import CREDENTIAL_ROLES, DEFAULT_ROLE, create_token, entry_yaml, parse_tokens
from webhook.yamlload import ConfigError

CHECK_EXIT_CODES = "exit codes:\n  0  the file is valid\n  1  the file is invalid (each problem on stderr)\n" \
                   "  2  the file cannot be read"


def add_ci_token_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``regcred ci-token create --name NAME [--role ROLE] [--registries a,b]`` and ``ci-token check FILE``."""
    parser = subparsers.add_parser("ci-token", help="manage tokens for the CI credentials endpoint",
                                   description="Manage tokens for the CI credentials endpoint.")
    parser.set_defaults(ci_token_usage=parser.format_usage)
    actions = parser.add_subparsers(dest="ci_token_command", metavar="{create,check}")
    create = actions.add_parser("create", help="make a new token: prints it once, then the entry to store")
    create.add_argument("--name", required=True, help="service user the token belongs to; shown in audit logs")
    create.add_argument("--role", default=DEFAULT_ROLE,
                        help=f"role of the service user (default {DEFAULT_ROLE}); "
                             f"{' and '.join(sorted(CREDENTIAL_ROLES))} may fetch credentials")
    create.add_argument("--registries", default=None,
                        help="comma-separated registry ids the token is limited to (default: every registry "
                             "with exposeToCI: true)")
    check = actions.add_parser("check", help="validate a tokens file offline, as the server would",
                               epilog=CHECK_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("file", type=Path, metavar="FILE", help="the tokens file (tokens.yaml) to validate")


def check_file(path: Path) -> int:
    """``regcred ci-token check FILE``: the server's messages, one per line on stderr."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {getattr(exc, 'strerror', None) or type(exc).__name__}", file=sys.stderr)
        return 2
    try:
        parsed = parse_tokens(text)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=sys.stderr)
        return 1
    for entry in parsed.tokens:
        if not entry.may_fetch:
            print(f"{path}: warning: {entry.name}: role {entry.role!r} cannot fetch credentials", file=sys.stderr)
    print(f"OK ({len(parsed.tokens)} tokens)")
    return 0


def run_ci_token(args: argparse.Namespace) -> int:
    """Run a ``ci-token`` subcommand. The token goes to stdout once; hints go to stderr."""
    if args.ci_token_command == "check":
        return check_file(args.file)
    if args.ci_token_command != "create":
        print(args.ci_token_usage(), end="", file=sys.stderr)
        print("regcred ci-token: give a command: create (a new token) or check FILE (validate a tokens file)",
              file=sys.stderr)
        return 2
    registries = None
    if args.registries is not None:
        registries = [part.strip() for part in args.registries.split(",") if part.strip()]
    try:
        token, entry = create_token(args.name, args.role, registries)
    except ConfigError as exc:
        for error in exc.errors:
            print(f"regcred ci-token create: {error}", file=sys.stderr)
        return 2
    if not entry.may_fetch:
        print(f"warning: role {entry.role!r} cannot fetch credentials", file=sys.stderr)
    print("# The token below is shown only now; store it as a masked CI secret (e.g. REGCRED_TOKEN).",
          file=sys.stderr)
    print(token)
    print("# Add this entry to the tokens: list in tokens.yaml (the Secret key or --ci-tokens file):",
          file=sys.stderr)
    sys.stdout.write(entry_yaml(entry))
    return 0
