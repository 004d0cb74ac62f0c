"""Pull Secrets: the dockerconfigjson regcred writes, the SecretStore seam, and ensure logic.

The ``.dockerconfigjson`` key is the registry's normalized url (``docker.io/acme``,
``registry.example.com:5000/team``). Two consumers read it, differently:

* kubelet matches keys by host and by *string prefix* of the path and tries every matching
  key, reading ``username``/``password`` (or ``auth``);
* containers/image (CRI-O, podman, skopeo) reads only ``auth`` and matches path-scoped keys
  on *segment* boundaries, most specific first, with no fallback.

So every entry carries all three fields.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from typing import Protocol

from webhook.providers import Credential
from webhook.registries import Registry

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "regcred"
REGISTRY_LABEL = "regcred.io/registry"
EXPIRES_ANNOTATION = "regcred.io/expires-at"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"


def dockerconfigjson(registry: Registry, credential: Credential) -> bytes:
    return _dockerconfigjson(registry.url, credential.username, credential.password)


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
        annotations[EXPIRES_ANNOTATION] = credential.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
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
    labels = meta.get("labels") or {}
    return (
        existing.get("type") == desired["type"]
        and existing.get("data") == desired["data"]
        and all(labels.get(key) == value for key, value in want["labels"].items())
        and (meta.get("annotations") or {}).get(EXPIRES_ANNOTATION)
        == (want.get("annotations") or {}).get(EXPIRES_ANNOTATION)
    )


class SecretWriteError(Exception):
    """A write the store could not do (API error, timeout, forbidden). Safe to show."""


@dataclass(frozen=True, slots=True)
class Ensured:
    outcome: str  # created | updated | unchanged | dry_run | conflict


class SecretStore(Protocol):
    async def ensure(self, desired: dict, *, dry_run: bool = False, urgent: bool = False) -> Ensured:
        """Make ``desired`` exist in its namespace, never touching a Secret we do not manage.

        ``urgent``: an admission is waiting on the answer (a store may serve it ahead of
        background work such as the refresher's).
        """
        ...


class InMemorySecretStore:
    """The embedded store used when no cluster is configured (local runs and tests)."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], dict] = {}
        self.writes = 0

    def get(self, namespace: str, name: str) -> dict | None:
        return self._secrets.get((namespace, name))

    def put(self, secret: dict) -> None:
        """Place a Secret as if someone else had written it (tests, examples)."""
        meta = secret["metadata"]
        self._secrets[(meta["namespace"], meta["name"])] = secret

    def list(self) -> list[dict]:
        return list(self._secrets.values())

    async def ensure(self, desired: dict, *, dry_run: bool = False, urgent: bool = False) -> Ensured:
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
