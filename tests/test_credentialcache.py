"""Time-controlled tests of the token cache: reuse, 2/3-life refresh-ahead, expiry,
single flight and invalidation, with a fake Provider and an injected clock.

No test sleeps or measures time: the clock is a number the test moves, background refreshes
are awaited explicitly (``settle``), and concurrency is asserted by counting mints.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.fake_tokens import (  # noqa: F401
    HOUR,
    REGISTRY,
    T0,
    Clock,
    FakeMaterial,
    FakeProvider,
    cache,
    clock,
    metrics,
    provider,
    run,
    sample,
    settle,
)
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers import Credential

# --- reuse and refresh-ahead -------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "fraction", "mints"),
    [
        pytest.param(0.0, 2 / 3, 1, id="fresh"),
        pytest.param(HOUR / 2, 2 / 3, 1, id="half-life"),
        pytest.param(HOUR * 2 / 3 - 1, 2 / 3, 1, id="just-before-two-thirds"),
        pytest.param(HOUR * 2 / 3, 2 / 3, 2, id="at-two-thirds"),
        pytest.param(HOUR - 1, 2 / 3, 2, id="just-before-expiry"),
        pytest.param(HOUR / 2, 0.5, 2, id="fraction-one-half"),
        pytest.param(HOUR * 0.8, 0.9, 1, id="fraction-nine-tenths"),
    ],
)
def test_reused_until_the_refresh_point_then_refreshed_in_the_background(
    clock: Clock, provider: FakeProvider, metrics: Metrics, elapsed: float, fraction: float, mints: int
) -> None:
    cache = CredentialCache({"ecr": provider}, FakeMaterial(), metrics, clock=clock, refresh_fraction=fraction)

    async def scenario() -> tuple[Credential, Credential, Credential]:
        first = await cache.get(REGISTRY)
        clock.advance(elapsed)
        second = await cache.get(REGISTRY)
        await settle()
        return first, second, await cache.get(REGISTRY)

    first, second, third = run(scenario())
    assert second is first  # the caller at the refresh point is not made to wait
    assert provider.calls == mints
    assert (third is not first) == (mints == 2)


def test_due_for_refresh_follows_the_two_thirds_point(cache: CredentialCache, clock: Clock) -> None:
    assert cache.due_for_refresh(REGISTRY)  # nothing cached yet
    minted = run(cache.get(REGISTRY))
    assert not cache.due_for_refresh(REGISTRY)
    clock.advance(HOUR * 2 / 3)
    # Due, and still handed out: the refresher passes again soon, admissions keep using it.
    assert cache.due_for_refresh(REGISTRY) and cache.peek(REGISTRY) is minted


def test_expired_credential_is_replaced_before_answering(cache: CredentialCache, clock: Clock,
                                                         provider: FakeProvider) -> None:
    async def scenario() -> tuple[Credential, Credential]:
        first = await cache.get(REGISTRY)
        clock.advance(HOUR)
        return first, await cache.get(REGISTRY)

    first, second = run(scenario())
    assert (first.password, second.password) == ("password-1", "password-2")
    assert second.expires_at.timestamp() == T0 + 2 * HOUR


def test_long_lived_credentials_are_never_refreshed(clock: Clock, metrics: Metrics) -> None:
    provider = FakeProvider(clock, life=None)
    cache = CredentialCache({"ecr": provider}, FakeMaterial(), metrics, clock=clock)

    async def scenario() -> None:
        await cache.get(REGISTRY)
        clock.advance(365 * 24 * HOUR)
        await cache.get(REGISTRY)
        await settle()

    run(scenario())
    assert provider.calls == 1
    assert not cache.due_for_refresh(REGISTRY)
    assert sample(metrics, "regcred_token_expiry_timestamp_seconds", registry="prod") is None


def test_peek_never_mints_and_forgets_expired(cache: CredentialCache, clock: Clock, provider: FakeProvider) -> None:
    assert cache.peek(REGISTRY) is None
    minted = run(cache.get(REGISTRY))
    assert cache.peek(REGISTRY) is minted
    clock.advance(HOUR)
    assert cache.peek(REGISTRY) is None
    assert provider.calls == 1


# --- single flight and invalidation -----------------------------------------------------


@pytest.mark.parametrize("waiters", [pytest.param(2, id="two"), pytest.param(50, id="fifty")])
def test_concurrent_callers_share_one_mint(cache: CredentialCache, provider: FakeProvider, waiters: int) -> None:
    provider.gate = threading.Event()

    async def scenario() -> list[Credential]:
        callers = asyncio.gather(*(cache.get(REGISTRY) for _ in range(waiters)))
        await asyncio.to_thread(provider.entered.wait, 30)  # the mint has started in its thread
        await asyncio.sleep(0)  # let every caller reach the shared task
        provider.gate.set()
        return await callers

    results = run(scenario())
    assert provider.calls == 1
    assert all(result is results[0] for result in results)


def test_concurrent_refresh_ahead_starts_one_mint(cache: CredentialCache, clock: Clock, provider: FakeProvider) -> None:
    async def scenario() -> None:
        await cache.get(REGISTRY)
        clock.advance(HOUR * 0.7)
        await asyncio.gather(*(cache.get(REGISTRY) for _ in range(20)))
        await settle()

    run(scenario())
    assert provider.calls == 2


def test_invalidate_forgets(cache: CredentialCache, provider: FakeProvider) -> None:
    other = REGISTRY.model_copy(update={"id": "other"})

    async def scenario() -> None:
        await cache.get(REGISTRY)
        await cache.get(other)
        cache.invalidate("prod")
        await cache.get(REGISTRY)
        await cache.get(other)
        assert provider.calls == 3
        cache.invalidate()
        await cache.get(REGISTRY)
        await cache.get(other)
        assert provider.calls == 5

    run(scenario())


def test_a_changed_registry_entry_mints_again(cache: CredentialCache, provider: FakeProvider) -> None:
    moved = REGISTRY.model_copy(update={"url": "123456789012.dkr.ecr.us-east-1.amazonaws.com"})

    async def scenario() -> None:
        await cache.get(REGISTRY)
        assert cache.peek(moved) is None
        await cache.get(moved)

    run(scenario())
    assert provider.calls == 2


def test_invalidate_during_a_mint_still_answers_its_waiters(cache: CredentialCache, provider: FakeProvider,
                                                            metrics: Metrics) -> None:
    provider.gate = threading.Event()

    async def scenario() -> Credential:
        waiter = asyncio.ensure_future(cache.get(REGISTRY))
        await asyncio.to_thread(provider.entered.wait, 30)
        cache.invalidate()
        provider.gate.set()
        return await waiter

    assert run(scenario()).password == "password-1"
    # The orphaned mint leaves no gauge behind for a registry the cache has forgotten.
    assert sample(metrics, "regcred_token_expiry_timestamp_seconds", registry="prod") is None


def test_material_is_read_for_the_secret_ref_only(clock: Clock, metrics: Metrics) -> None:
    provider = FakeProvider(clock)
    material = FakeMaterial({"aws": {"aws_access_key_id": b"AKIA"}})
    cache = CredentialCache({"ecr": provider}, material, metrics, clock=clock)
    with_ref = REGISTRY.model_copy(update={"id": "keys", "secret_ref": "aws"})
    missing = REGISTRY.model_copy(update={"id": "missing", "secret_ref": "absent"})

    async def scenario() -> None:
        for registry in (REGISTRY, with_ref, missing):
            await cache.get(registry)

    run(scenario())
    assert provider.materials == [None, {"aws_access_key_id": b"AKIA"}, None]
