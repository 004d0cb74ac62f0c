"""Label and field selectors for the fake API server (test fixture only).

Grammar follows k8s.io/apimachinery/pkg/labels: comma-joined requirements, each
``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
``k>1``, ``k<1``. Quirks reproduced: ``!=`` and ``notin`` also match objects that
do not carry the key at all; a syntax error is a 400 BadRequest, not an empty list.
Field selectors only accept the fields the real server indexes for the resource;
anything else is ``field label not supported: <field>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .apiserver_errors import bad_request

Predicate = Callable[[dict], bool]

_KEY = r"[^\s!=<>(),]+"
_NOT_EXISTS = re.compile(rf"^\s*!\s*({_KEY})\s*$")
_EXISTS = re.compile(rf"^\s*({_KEY})\s*$")
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_OP = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*([^\s!=<>(),]*)\s*$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside an ``in (...)`` value set."""
    terms, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return terms


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not _NAME.match(name) or len(name) > 63 or len(prefix) > 253:
        raise bad_request(f'unable to parse requirement: invalid label key "{key}": name part '
                          "must consist of alphanumeric characters, '-', '_' or '.', and must "
                          "start and end with an alphanumeric character")


def _check_value(value: str) -> None:
    if not _VALUE.match(value) or len(value) > 63:
        raise bad_request(f'unable to parse requirement: invalid label value: "{value}": a valid '
                          "label must be an empty string or consist of alphanumeric characters, "
                          "'-', '_' or '.', and must start and end with an alphanumeric character")


def _requirement(term: str) -> Callable[[dict], bool]:
    if match := _NOT_EXISTS.match(term):
        key = match.group(1)
        _check_key(key)
        return lambda labels: key not in labels
    if match := _SET.match(term):
        key, op, raw = match.groups()
        _check_key(key)
        values = {v.strip() for v in raw.split(",")}
        for value in values:
            _check_value(value)
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _OP.match(term):
        return _comparison(*match.groups())
    if match := _EXISTS.match(term):
        key = match.group(1)
        _check_key(key)
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: found '{term.strip()}', "
                      "expected: in, notin, =, ==, !=, gt, lt")


def _comparison(key: str, op: str, value: str) -> Callable[[dict], bool]:
    _check_key(key)
    _check_value(value)
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if not value.lstrip("-").isdigit():
        raise bad_request(f"unable to parse requirement: for 'gt', 'lt' operators, "
                          f"the value must be an integer, got {value!r}")
    bound = int(value)

    def compare(labels: dict) -> bool:
        have = labels.get(key, "")
        if not have.lstrip("-").isdigit():
            return False
        return int(have) > bound if op == ">" else int(have) < bound

    return compare


def label_selector(selector: str | None) -> Predicate | None:
    """A predicate over a whole object, or None when the selector selects everything."""
    if not selector or not selector.strip():
        return None
    requirements = [_requirement(term) for term in _split_terms(selector)]

    def matches(obj: dict) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return matches


def _field_value(obj: dict, path: str) -> str:
    current: object = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(current, bool):
        return str(current).lower()
    return "" if current is None else str(current)


def field_selector(selector: str | None, supported: frozenset[str]) -> Predicate | None:
    """``metadata.name=x,type!=Opaque`` style selectors over the fields ``supported``."""
    if not selector or not selector.strip():
        return None
    checks = []
    for term in selector.split(","):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, op, value = match.groups()
        if path not in supported:
            raise bad_request(f"field label not supported: {path}")
        checks.append((path, op != "!=", value))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in checks)

    return matches


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)
