"""Request log and fault injection for the fake API server (test fixture only).

Tests read the log to assert how many calls a code path made ("zero API requests on
the warm path") and arm faults to see how the code under test copes with a flaky,
slow, rate-limiting or unauthorized API server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestRecord:
    """One request as the apiserver's audit log would see it."""

    verb: str            # get list watch create update patch delete (discovery: get)
    resource: str | None  # plural, e.g. "secrets"; None for discovery and unknown paths
    namespace: str | None
    name: str | None
    status: int
    time: float           # time.time() when the request arrived
    duration: float       # seconds until the response started (watch: until the 200)
    method: str
    path: str
    query: str
    group: str = ""


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def count(self, **filters: object) -> int:
        wanted = {k: v for k, v in filters.items() if v is not None}
        with self._lock:
            return sum(all(getattr(r, k) == v for k, v in wanted.items()) for r in self._records)


@dataclass(eq=False)
class Rule:
    """Matches requests by verb, resource, namespace and name; None matches anything."""

    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    remaining: int = -1          # -1: forever (forbid rules)
    status: int = 500
    retry_after: int | None = None
    seconds: float = 0.0
    hits: int = field(default=0)

    def matches(self, verb: str, resource: str | None, namespace: str | None,
                name: str | None) -> bool:
        return all(want is None or want == have for want, have in (
            (self.verb, verb), (self.resource, resource),
            (self.namespace, namespace), (self.name, name)))


class Faults:
    """Armed failures, hangs and authorization denials; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: list[Rule] = []
        self.hangs: list[Rule] = []
        self.denials: list[Rule] = []

    def add(self, kind: str, rule: Rule) -> Rule:
        with self._lock:
            getattr(self, kind).append(rule)
        return rule

    def remove(self, kind: str, rule: Rule | None = None) -> None:
        with self._lock:
            rules = getattr(self, kind)
            if rule is None:
                rules.clear()
            elif rule in rules:
                rules.remove(rule)

    def take(self, kind: str, verb: str, resource: str | None, namespace: str | None,
             name: str | None) -> Rule | None:
        """The first matching rule, consuming one use of it."""
        with self._lock:
            rules = getattr(self, kind)
            for rule in rules:
                if rule.matches(verb, resource, namespace, name):
                    rule.hits += 1
                    if rule.remaining > 0:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            rules.remove(rule)
                    return rule
            return None
