"""Naming a missing RBAC permission from the API server's 403.

The RBAC authorizer's refusal says exactly what was asked for: ``User "system:serviceaccount:
regcred-system:regcred" cannot create resource "secrets" in API group "" in the namespace
"team-a"``. regcred turns that into one log line per missing permission (at most once a minute
each, so a refresh pass over thousands of namespaces does not repeat it thousands of times)
and a counter labelled by verb and resource. The message is the authorizer's, never an
object: a 403 carries no Secret data. Other 403s (a namespace being deleted refuses new
content with one) are not permissions and are not reported here. The log says "if it
persists": a kube-apiserver that has just restarted refused every request of regcred's
ServiceAccount for a moment (seen on v1.37.2), and a moment is no missing rule.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_DENIED = re.compile(r'cannot (?P<verb>[a-z]+) resource "(?P<resource>[a-z0-9./-]{1,80})"'
                     r'(?: in API group "(?P<group>[a-z0-9.-]{0,80})")?'
                     r'(?: in the namespace "(?P<namespace>[a-z0-9-]{1,63})")?')
LOG_EVERY_SECONDS = 60.0
_MAX_REMEMBERED = 256  # distinct permissions whose last log time is kept; the set RBAC checks is small


@dataclass(frozen=True)
class MissingPermission:
    verb: str
    resource: str
    group: str
    namespace: str | None

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {resource} {where}"


def missing_permission(exc: BaseException) -> MissingPermission | None:
    """The permission a 403 refused, or None when the error is not an RBAC refusal."""
    if getattr(exc, "status", None) != 403:
        return None
    try:
        message = json.loads(getattr(exc, "body", None) or "{}").get("message", "")
    except (ValueError, AttributeError):
        return None
    found = _DENIED.search(message if isinstance(message, str) else "")
    if found is None:
        return None
    return MissingPermission(found["verb"], found["resource"], found["group"] or "", found["namespace"])


class PermissionReporter:
    """Counts and logs RBAC refusals; ``count(verb, resource)`` increments the metric."""

    def __init__(self, count: Callable[[str, str], None], *, clock: Callable[[], float] = time.monotonic):
        self._count = count
        self._clock = clock
        self._logged: dict[MissingPermission, float] = {}

    def __call__(self, exc: BaseException) -> None:
        missing = missing_permission(exc)
        if missing is None:
            return
        self._count(missing.verb, missing.resource)
        now = self._clock()
        if now - self._logged.get(missing, float("-inf")) < LOG_EVERY_SECONDS:
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[missing] = now
        log.error("RBAC refused regcred: %s; if it persists, grant it to regcred's ServiceAccount "
                  "(the chart's ClusterRole and Role list what regcred needs)", missing,
                  extra={"verb": missing.verb, "resource": missing.resource, "namespace": missing.namespace})
