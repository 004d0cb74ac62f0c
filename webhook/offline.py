"""``regcred check-config`` and ``regcred match``: the registry list checked and explained offline.

Both read the same file ``serve --config`` reads and print the same messages the server logs,
one problem per line, so a list can be fixed before it is deployed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from webhook.identities import shared_identity_warnings
from webhook.labels import parse_labels
from webhook.registries import Matcher, Registry, RegistryList, parse_registries
from webhook.tenancy import refusal
from webhook.yamlload import ConfigError

CHECK_EXIT_CODES = """exit codes:
  0  the list is valid
  1  the list is invalid (each problem on stderr, one per line)
  2  the file cannot be read"""
MATCH_EXIT_CODES = """exit codes:
  0  every image is a valid reference
  1  at least one image is not a valid reference (its row says why)
  2  the registry list cannot be read or is invalid, or the arguments are wrong"""
SELECTOR_NOT_EVALUATED = "yes (selector not evaluated: pass --namespace-labels)"


def _load(file: Path) -> tuple[RegistryList | None, int]:
    """The list, or None and the exit code after printing each problem as ``FILE: problem``."""
    try:
        return parse_registries(file.read_text()), 0
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{file}: cannot read: {getattr(exc, 'strerror', None) or type(exc).__name__}", file=sys.stderr)
        return None, 2
    except ConfigError as exc:
        for error in exc.errors:
            print(f"{file}: {error}", file=sys.stderr)
        return None, 1


def check_config(file: Path) -> int:
    registries, code = _load(file)
    if registries is not None:
        for warning in shared_identity_warnings(registries.registries):
            print(f"{file}: warning: {warning}", file=sys.stderr)
        print(f"OK ({len(registries.registries)} registries)")
    return code


def match_images(config: Path, images: list[str], namespace: str | None = None, labels: str | None = None) -> int:
    try:
        namespace_labels = parse_labels(labels) if labels is not None else None
    except ValueError as exc:
        print(f"regcred match: --namespace-labels: {exc}", file=sys.stderr)
        return 2
    registries, code = _load(config)
    if registries is None:
        return 2
    matcher = Matcher(registries)
    rows: list[tuple[str, ...]] = [("IMAGE", "NORMALIZED", "REGISTRY") + (("GRANTED",) if namespace else ())]
    invalid = False
    for image in images:
        found = matcher.match(image)
        invalid |= found.error is not None
        row: tuple[str, ...] = (image, found.normalized or str(found.error),
                                found.registry.id if found.registry else "-")
        if namespace:
            row += (_granted(found.registry, namespace, namespace_labels),)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 1 if invalid else 0


def _granted(registry: Registry | None, namespace: str, labels: dict[str, str] | None) -> str:
    if registry is None:
        return "-"
    why = refusal(registry, namespace, labels)
    if why is not None:
        return f"no: {why}"
    if registry.namespace_selector is not None and labels is None:
        return SELECTOR_NOT_EVALUATED
    return "yes"
