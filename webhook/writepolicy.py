"""Who may write a pull Secret: the one decision every store and the warm path follow.

A Secret without regcred's ``managed-by`` label is never touched ("conflict"). One that
already holds what regcred would write is left alone ("unchanged"). Otherwise it depends on
who asks:

Who may replace a managed Secret that differs from what it would write (``may_keep``): the
refresher, which runs on the leader only, is authoritative and replaces whatever differs. An
admission (on any replica) keeps an existing Secret for the same registry url that is still
fresh, and writes only when it is missing, stale or has the wrong url. Every replica mints
its own token, so "differs" is the normal state between replicas; if admissions also
replaced whatever differed, two replicas would rewrite each other's Secrets for ever, and
preferring "the token expiring last" instead loses a rotation to a rival's token minted from
the old credentials. One writer decides; the others only fill gaps.

A sole writer (``regcred serve`` without a cluster: one process, no replicas, no refresher) is
authoritative for every write, or a changed credential would never reach its Secrets.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from typing import Literal

from webhook.jsontypes import JsonObject
from webhook.pullsecrets import (
    EXPIRES_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    expires_at,
)

Decision = Literal["conflict", "unchanged", "replace"]

# An admission keeps an existing Secret with at least this much life left, or a quarter of
# the life ours has left when that is less (short tokens: a fixed margin above the third a
# leader keeps would have followers fight it). The Pod pulls within seconds to minutes of its
# admission, and a live leader re-mints at 2/3 of a life, so its Secrets never drop this low.
FRESH_MARGIN = 300.0


def decide(existing: JsonObject, desired: JsonObject, *, authoritative: bool, now: float) -> Decision:
    """What to do with ``existing`` when ``desired`` is wanted; ``now`` is unix seconds."""
    if not is_managed(existing):
        return "conflict"
    if is_current(existing, desired):
        return "unchanged"
    if not authoritative and may_keep(existing, desired, now):
        return "unchanged"
    return "replace"


def is_managed(secret: JsonObject) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def is_current(existing: JsonObject, desired: JsonObject) -> bool:
    """Same credential, type and regcred labels: nothing to write."""
    meta, want = existing.get("metadata") or {}, desired["metadata"]
    return (
        existing.get("type") == desired["type"]
        and existing.get("data") == desired["data"]
        and _has_labels(meta, want["labels"])
        and (meta.get("annotations") or {}).get(EXPIRES_ANNOTATION)
        == (want.get("annotations") or {}).get(EXPIRES_ANNOTATION)
    )


def may_keep(existing: JsonObject, desired: JsonObject, now: float) -> bool:
    """An admission may leave ``existing`` in place of ``desired`` (see the module docstring):
    ours, same type and registry url, and fresh. ``now`` is unix seconds."""
    return (
        existing.get("type") == desired["type"]
        and _has_labels(existing.get("metadata") or {}, desired["metadata"]["labels"])
        and _auth_keys(existing) is not None
        and _auth_keys(existing) == _auth_keys(desired)
        and _fresh(expires_at(existing), expires_at(desired), now)
    )


def _has_labels(metadata: JsonObject, wanted: dict[str, str]) -> bool:
    labels = metadata.get("labels") or {}
    for key, value in wanted.items():  # a loop, not all(<generator>): every admission asks this
        if labels.get(key) != value:
            return False
    return True


def _fresh(theirs: float | None, ours: float | None, now: float) -> bool:
    if theirs is None:
        return True  # a credential without expiry (basic): only the refresher replaces it
    ours = math.inf if ours is None else ours
    # min(ours, ...): never swap a credential for one that expires sooner (ours may be an
    # expired-on-arrival token, which the token cache hands out anyway).
    return theirs >= min(ours, now + min(FRESH_MARGIN, (ours - now) / 4))


def _auth_keys(secret: JsonObject) -> frozenset[str] | None:
    """The registry urls a dockerconfigjson Secret holds credentials for."""
    value = (secret.get("data") or {}).get(".dockerconfigjson")
    return _decoded_keys(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=256)
def _decoded_keys(encoded: str) -> frozenset[str] | None:
    # Cached per data value: one per credential, shared by every namespace.
    try:
        return frozenset(json.loads(base64.b64decode(encoded))["auths"])
    except (KeyError, TypeError, ValueError):
        return None
