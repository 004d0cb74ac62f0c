"""Fakes for time-controlled token-cache tests: a clock the test moves, a Provider that
counts its mints, and helpers to wait for background refreshes and read metrics.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from tests.support.sensitive import register
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers import Credential
from webhook.registries import Registry

T0 = 1_800_000_000.0
HOUR = 3600.0
SECRET = "s3cret-material-never-shown"
register(SECRET, "fake_tokens.SECRET")


class Clock:
    """Time that the test sets and moves forward: lifetimes pass without waiting."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    @classmethod
    def starting_now(cls) -> Clock:
        """From the real time: for fakes (moto, the token endpoint, the fake API server) that
        stamp expiries from it."""
        return cls(time.time())

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProvider:
    """Mints ``password-N`` living ``life`` seconds from the fake clock's now, or raises
    whatever ``fail_with`` holds. ``gate`` (when set) makes mints wait to be released."""

    def __init__(self, clock: Clock, life: float | None = HOUR):
        self.clock, self.life = clock, life
        self.calls = 0
        self.materials: list[Mapping[str, bytes] | None] = []
        self.fail_with: BaseException | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        self.calls += 1
        self.materials.append(material)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail_with is not None:
            raise self.fail_with
        expires = None if self.life is None else datetime.fromtimestamp(self.clock() + self.life, UTC)
        return Credential("user", f"password-{self.calls}", expires)


class FakeMaterial:
    def __init__(self, secrets: dict[str, dict[str, bytes]] | None = None):
        self.secrets = secrets or {}

    def read(self, name: str) -> Mapping[str, bytes] | None:
        return self.secrets.get(name)


REGISTRY = Registry.model_validate({"id": "prod", "url": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "type": "ecr"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(clock: Clock) -> FakeProvider:
    return FakeProvider(clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def cache(provider: FakeProvider, metrics: Metrics, clock: Clock) -> CredentialCache:
    return CredentialCache({"ecr": provider, "basic": provider}, FakeMaterial(), metrics, clock=clock)


def run(coroutine):
    return asyncio.run(coroutine)


async def settle() -> None:
    """Wait for every background task (refresh-ahead mints) to finish."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.gather(*others, return_exceptions=True)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)

