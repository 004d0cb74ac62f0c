"""Pull Secrets: the dockerconfigjson regcred writes, the SecretStore seam, and ensure logic.

The ``.dockerconfigjson`` key is the registry's normalized url (``docker.io/acme``,
``registry.example.com:5000/team``). Two consumers read it, differently:

* kubelet matches keys by host and by *string prefix* of the path and tries every matching
  key, reading ``username``/``password`` (or ``auth``);
* containers/image (CRI-O, podman, skopeo) reads only ``auth`` and matches path-scoped keys
  on *segment* boundaries, most specific first, with no fallback.

So every entry carries all three fields.

Who may replace what is decided in one place: ``webhook/writepolicy.py``.
"""

from __future__ import annotations

import base64
import builtins
import functools
import json
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from webhook.jsontypes import JsonObject
from webhook.providers import Credential
from webhook.registries import Registry

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "regcred"
REGISTRY_LABEL = "regcred.io/registry"
EXPIRES_ANNOTATION = "regcred.io/expires-at"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
_EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _dockerconfigjson(url: str, username: str, password: str) -> bytes:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "auth": token}
    return json.dumps({"auths": {url: entry}}, separators=(",", ":"), sort_keys=True).encode()


@functools.lru_cache(maxsize=256)
def _encoded(url: str, username: str, password: str) -> str:
    """The Secret's data value, encoded once per credential rather than once per admission and
    per Secret a refresh pass checks (the same string for every namespace)."""
    return base64.b64encode(_dockerconfigjson(url, username, password)).decode()


def build_pull_secret(registry: Registry, credential: Credential, namespace: str) -> JsonObject:
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


def expires_at(secret: JsonObject) -> float | None:
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
        return datetime.strptime(value, _EXPIRY_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return -math.inf


class SecretWriteError(Exception):
    """A write the store could not do (API error, timeout, forbidden). Safe to show."""


class NamespaceGone(SecretWriteError):
    """The Secret's namespace does not exist or is being deleted: no retry can succeed."""


@dataclass(frozen=True, slots=True)
class Ensured:
    outcome: str  # created | updated | unchanged | dry_run | conflict


# Answers of a store's writes: the HTTP statuses a Kubernetes API server gives them.
CREATED, REPLACED, DELETED, NOT_FOUND, EXISTS = 201, 200, 200, 404, 409


class SecretStore(Protocol):
    """Where pull Secrets live: plain create, read, replace and delete, plus a cache.

    No store decides anything: ``SecretWriter`` does, under ``webhook/writepolicy.py``. Writes
    answer a status (``CREATED``/``REPLACED``/``DELETED``, ``NOT_FOUND``, or ``EXISTS`` for an
    AlreadyExists or a stale resourceVersion) or raise ``SecretWriteError``. A write may be on
    its way before the awaitable is awaited; ``urgent``: an admission waits on it.
    """

    def cached(self, namespace: str, name: str) -> JsonObject | None:
        """The stored Secret as last seen, from memory. Stores replace these objects on every
        change and never modify one in place, so callers may remember them by identity."""
        ...

    def managed(self) -> list[JsonObject]:
        """Every Secret regcred manages, from memory (what /status and /metrics count)."""
        ...

    def create(self, desired: JsonObject, *, urgent: bool) -> Awaitable[int]: ...

    def read(self, namespace: str, name: str, *, urgent: bool) -> Awaitable[JsonObject | None]: ...

    def replace(self, existing: JsonObject, desired: JsonObject, *, urgent: bool) -> Awaitable[int]:
        """``desired`` in place of ``existing``, only if that is still what is stored."""
        ...

    def delete(self, existing: JsonObject) -> Awaitable[int]:
        """Delete ``existing``, only if that is still what is stored."""
        ...

    async def stop(self) -> None: ...


class InMemorySecretStore:
    """The embedded store used when no cluster is configured (local runs and tests).

    Stored objects are never changed in place, so the object itself is the version: ``replace``
    and ``delete`` of anything but the stored object answer ``EXISTS``, as the API server does
    for a stale resourceVersion.
    """

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], JsonObject] = {}
        self.writes = 0

    def get(self, namespace: str, name: str) -> JsonObject | None:
        return self._secrets.get((namespace, name))

    def cached(self, namespace: str, name: str) -> JsonObject | None:
        return self.get(namespace, name)

    def put(self, secret: JsonObject) -> None:
        """Place a Secret as if someone else had written it (tests, examples). Stored as given:
        like every write, it replaces the object, and callers must not modify it afterwards
        (``cached`` promises objects that never change in place)."""
        meta = secret["metadata"]
        self._secrets[(meta["namespace"], meta["name"])] = secret

    def list(self) -> builtins.list[JsonObject]:  # the method shadows the builtin in the class body
        return [*self._secrets.values()]

    def managed(self) -> builtins.list[JsonObject]:
        """The Secrets regcred manages, as the cluster store's watch would hold them."""
        return [secret for secret in self._secrets.values()
                if ((secret.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY]

    async def create(self, desired: JsonObject, *, urgent: bool = False) -> int:
        key = _key(desired)
        if key in self._secrets:
            return EXISTS
        self._store(key, desired)
        return CREATED

    async def read(self, namespace: str, name: str, *, urgent: bool = False) -> JsonObject | None:
        return self._secrets.get((namespace, name))

    async def replace(self, existing: JsonObject, desired: JsonObject, *, urgent: bool = False) -> int:
        key = _key(desired)
        status = self._unchanged_since(key, existing)
        if status is None:
            self._store(key, desired)
        return status or REPLACED

    async def delete(self, existing: JsonObject) -> int:
        key = _key(existing)
        status = self._unchanged_since(key, existing)
        if status is None:
            del self._secrets[key]
        return status or DELETED

    def _unchanged_since(self, key: tuple[str, str], existing: JsonObject) -> int | None:
        """None when ``existing`` is still what is stored; else NOT_FOUND or EXISTS (a stale version)."""
        stored = self._secrets.get(key)
        if stored is None:
            return NOT_FOUND
        return None if stored is existing else EXISTS

    async def stop(self) -> None:
        pass

    def _store(self, key: tuple[str, str], desired: JsonObject) -> None:
        self._secrets[key] = desired
        self.writes += 1


def _key(secret: JsonObject) -> tuple[str, str]:
    meta = secret["metadata"]
    return meta["namespace"], meta["name"]
