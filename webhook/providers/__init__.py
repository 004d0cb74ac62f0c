"""Credential providers: one module per credential source behind one small Protocol.

A provider answers one question: "give me a credential for this registry, and when does it
expire". Providers are plain blocking functions (boto3 and google-auth are blocking SDKs);
the token cache runs them in worker threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
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
