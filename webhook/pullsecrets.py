"""Pull Secrets: the dockerconfigjson regcred writes, the SecretStore seam, and ensure logic.

The ``.dockerconfigjson`` key is the registry's normalized url (``docker.io/acme``,
``registry.example.com:5000/team``). Two consumers read it, differently:

* kubelet matches keys by host and by *string prefix* of the path and tries every matching
  key, reading ``username``/``password`` (or ``auth``);
* containers/image (CRI-O, podman, skopeo) reads only ``auth`` and matches path-scoped keys
  on *segment* boundaries, most specific first, with no fallback.

So every entry carries all three fields.

Who may replace a managed Secret that differs from what it would write (``may_keep``): the
refresher, which runs on the leader only, is authoritative and replaces whatever differs. An
admission (on any replica) keeps an existing Secret for the same registry url that is still
fresh, and writes only when it is missing, stale or has the wrong url. Every replica mints
its own token, so "differs" is the normal state between replicas; if admissions also
replaced whatever differed, two replicas would rewrite each other's Secrets for ever, and
preferring "the token expiring last" instead loses a rotation to a rival's token minted from
the old credentials. One writer decides; the others only fill gaps.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from webhook.providers import Credential
from webhook.registries import Registry

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "regcred"
REGISTRY_LABEL = "regcred.io/registry"
EXPIRES_ANNOTATION = "regcred.io/expires-at"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
_EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# An admission keeps an existing Secret with at least this much life left, or a quarter of
# the life ours has left when that is less (short tokens: a fixed margin above the third a
# leader keeps would have followers fight it). The Pod pulls within seconds to minutes of its
# admission, and a live leader re-mints at 2/3 of a life, so its Secrets never drop this low.
FRESH_MARGIN = 300.0


def _dockerconfigjson(url: str, username: str, password: str) -> bytes:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "auth": token}
    return json.dumps({"auths": {url: entry}}, separators=(",", ":"), sort_keys=True).encode()


@functools.lru_cache(maxsize=256)
def _encoded(url: str, username: str, password: str) -> str:
    """The Secret's data value, encoded once per credential rather than once per admission and
    per Secret a refresh pass checks (the same string for every namespace)."""
    return base64.b64encode(_dockerconfigjson(url, username, password)).decode()


def build_pull_secret(registry: Registry, credential: Credential, namespace: str) -> dict:
    """The whole Secret object regcred wants in ``namespace`` for ``registry``."""
    annotations = {}
    if credential.expires_at is not None:
        annotations[EXPIRES_ANNOTATION] = credential.expires_at.strftime(_EXPIRY_FORMAT)
    metadata = {
        "name": registry.secret_name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, REGISTRY_LABEL: registry.id},
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": DOCKERCONFIGJSON,
        "metadata": metadata,
        "data": {".dockerconfigjson": _encoded(registry.url, credential.username, credential.password)},
    }


def is_managed(secret: dict) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def is_current(existing: dict, desired: dict) -> bool:
    """Same credential, type and regcred labels: nothing to write."""
    meta, want = existing.get("metadata") or {}, desired["metadata"]
    return (
        existing.get("type") == desired["type"]
        and existing.get("data") == desired["data"]
        and _has_labels(meta, want["labels"])
        and (meta.get("annotations") or {}).get(EXPIRES_ANNOTATION)
        == (want.get("annotations") or {}).get(EXPIRES_ANNOTATION)
    )


def may_keep(existing: dict, desired: dict, now: float) -> bool:
    """An admission may leave ``existing`` in place of ``desired`` (see the module docstring):
    ours, same type and registry url, and fresh. ``now`` is unix seconds."""
    return (
        existing.get("type") == desired["type"]
        and _has_labels(existing.get("metadata") or {}, desired["metadata"]["labels"])
        and _auth_keys(existing) is not None
        and _auth_keys(existing) == _auth_keys(desired)
        and _fresh(expires_at(existing), expires_at(desired), now)
    )


def _has_labels(metadata: dict, wanted: dict[str, str]) -> bool:
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


def expires_at(secret: dict) -> float | None:
    """The ``regcred.io/expires-at`` annotation as unix seconds; None if absent (the credential
    does not expire). An unreadable one counts as expired: nobody can tell how fresh it is."""
    value = ((secret.get("metadata") or {}).get("annotations") or {}).get(EXPIRES_ANNOTATION)
    if value is None:
        return None
    return _parse_expiry(value) if isinstance(value, str) else -math.inf


@functools.lru_cache(maxsize=256)
def _parse_expiry(value: str) -> float:
    # Cached: admissions on a follower compare the same few timestamps again and again.
    try:
        return datetime.strptime(value, _EXPIRY_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return -math.inf


def _auth_keys(secret: dict) -> frozenset[str] | None:
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


class SecretWriteError(Exception):
    """A write the store could not do (API error, timeout, forbidden). Safe to show."""


class NamespaceGone(SecretWriteError):
    """The Secret's namespace does not exist or is being deleted: no retry can succeed."""


@dataclass(frozen=True, slots=True)
class Ensured:
    outcome: str  # created | updated | unchanged | dry_run | conflict


class SecretStore(Protocol):
    def ensure(self, desired: dict, *, dry_run: bool = False, urgent: bool = False,
               authoritative: bool = False) -> Awaitable[Ensured]:
        """Make ``desired`` exist in its namespace, never touching a Secret we do not manage.

        ``urgent``: an admission is waiting on the answer (a store may serve it ahead of
        background work such as the refresher's). ``authoritative``: replace a managed
        Secret whenever it differs (the refresher); otherwise one that ``may_keep`` is kept.
        A store may start the work before returning (an ``async def`` starts it when awaited).
        """
        ...

    def settled(self, desired: dict) -> bool:
        """True when a non-authoritative ``ensure(desired)`` would answer "unchanged" from
        memory alone: the admission warm path asks this first, without awaiting."""
        ...

    def cached(self, namespace: str, name: str) -> dict | None:
        """The stored Secret as last seen, from memory. Stores replace these objects on every
        change and never modify one in place, so callers may remember them by identity."""
        ...

    def managed(self) -> list[dict]:
        """Every Secret regcred manages, from memory (what /status and /metrics count)."""
        ...


class InMemorySecretStore:
    """The embedded store used when no cluster is configured (local runs and tests)."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], dict] = {}
        self.writes = 0

    def get(self, namespace: str, name: str) -> dict | None:
        return self._secrets.get((namespace, name))

    def cached(self, namespace: str, name: str) -> dict | None:
        return self.get(namespace, name)

    def put(self, secret: dict) -> None:
        """Place a Secret as if someone else had written it (tests, examples). Stored as given:
        like every write, it replaces the object, and callers must not modify it afterwards
        (``cached`` promises objects that never change in place)."""
        meta = secret["metadata"]
        self._secrets[(meta["namespace"], meta["name"])] = secret

    def list(self) -> list[dict]:
        return list(self._secrets.values())

    def managed(self) -> list[dict]:
        """The Secrets regcred manages, as the cluster store's watch would hold them."""
        return [secret for secret in self._secrets.values() if is_managed(secret)]

    def settled(self, desired: dict) -> bool:
        existing = self._secrets.get((desired["metadata"]["namespace"], desired["metadata"]["name"]))
        return existing is not None and is_managed(existing) and is_current(existing, desired)

    async def ensure(self, desired: dict, *, dry_run: bool = False, urgent: bool = False,
                     authoritative: bool = False) -> Ensured:
        # Always authoritative: one process is the only writer, and no refresher runs without
        # a cluster, so a changed credential reaches its Secrets only through here.
        key = (desired["metadata"]["namespace"], desired["metadata"]["name"])
        existing = self._secrets.get(key)
        if existing is not None and not is_managed(existing):
            return Ensured("conflict")
        if existing is not None and is_current(existing, desired):
            return Ensured("unchanged")
        if dry_run:
            return Ensured("dry_run")
        self._secrets[key] = desired
        self.writes += 1
        return Ensured("created" if existing is None else "updated")
