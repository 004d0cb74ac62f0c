"""Credential providers: one module per credential source behind one small Protocol.

A provider answers one question: "give me a credential for this registry, and when does it
expire". Providers are plain blocking functions (boto3 and google-auth are blocking SDKs);
the token cache runs them in worker threads, never on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from webhook.registries import Registry


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str = field(repr=False)  # never in a repr, log line or traceback
    expires_at: datetime | None = None  # timezone-aware; None for long-lived credentials


class CredentialUnavailable(Exception):
    """No credential can be had right now. The message is safe to log and show on a Pod:
    it names the registry and a reason or provider error code, never credential material."""


class Provider(Protocol):
    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        """Return a credential for ``registry``. ``material`` is the ``secretRef`` Secret's
        data (None when the entry has no secretRef). Raise CredentialUnavailable."""
        ...


class MaterialSource(Protocol):
    def read(self, name: str) -> Mapping[str, bytes] | None:
        """The data of the credentials Secret ``name`` in regcred's own namespace, or None."""
        ...


def ascii_keys(registry: Registry, material: Mapping[str, bytes] | None,
               shapes: Mapping[str, tuple[re.Pattern[str], str]], required: Collection[str]) -> dict[str, str]:
    """The ``shapes`` keys present in the ``secretRef`` Secret, as ASCII text each matching its
    pattern (``shapes[key] = (pattern, what it is)``); ``required`` ones must be there.
    Errors name the Secret and the key, never the value."""
    where = f"{registry.id}: credentials Secret {registry.secret_ref!r}"
    if material is None:
        raise CredentialUnavailable(f"{where} not found")
    missing = [key for key in required if not material.get(key)]
    if missing:
        raise CredentialUnavailable(f"{where} lacks key(s) {', '.join(missing)}")
    values: dict[str, str] = {}
    for key, (shape, what) in shapes.items():
        if not material.get(key):
            continue
        try:
            # kubectl --from-file keeps a file's trailing newline; it is never part of a value.
            value = material[key].decode("ascii").strip()
        except UnicodeDecodeError:
            raise CredentialUnavailable(f"{where} key {key} is not ASCII text") from None
        if not shape.match(value):
            raise CredentialUnavailable(f"{where} key {key} is not a valid {what}")
        values[key] = value
    return values
