"""Time-controlled tests of the token cache when minting goes wrong: keep-last-on-failure,
exponential backoff (never a tight loop), already-expired credentials, provider bugs, metrics.

As in test_credentialcache.py, the clock is a number the test moves and mints are counted.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.fake_tokens import (  # noqa: F401
    HOUR,
    REGISTRY,
    SECRET,
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
from webhook.credentialcache import BACKOFF_MAX, BACKOFF_MIN, MIN_LIFE, CredentialCache
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable

# --- failures, keep-last, backoff --------------------------------------------------------


def test_failed_refresh_keeps_the_last_credential_until_it_really_expires(
    cache: CredentialCache, clock: Clock, provider: FakeProvider, metrics: Metrics
) -> None:
    async def scenario() -> list[str]:
        seen = [(await cache.get(REGISTRY)).password]
        provider.fail_with = CredentialUnavailable("prod: AWS GetAuthorizationToken failed: ThrottlingException")
        for step in (HOUR * 2 / 3, HOUR / 6, HOUR / 6 - 1):  # refresh point, later, last second
            clock.advance(step)
            seen.append((await cache.get(REGISTRY)).password)
            await settle()
        clock.advance(1)  # the real expiry
        with pytest.raises(CredentialUnavailable, match="ThrottlingException"):
            await cache.get(REGISTRY)
        return seen

    assert run(scenario()) == ["password-1"] * 4
    assert sample(metrics, "regcred_token_mints_total", registry="prod", outcome="failure") >= 2
    assert sample(metrics, "regcred_token_expiry_timestamp_seconds", registry="prod") == T0 + HOUR


def test_recovery_after_failures_resets_the_backoff(cache: CredentialCache, clock: Clock,
                                                    provider: FakeProvider) -> None:
    async def scenario() -> Credential:
        provider.fail_with = CredentialUnavailable("prod: down")
        for _ in range(3):
            with pytest.raises(CredentialUnavailable):
                await cache.get(REGISTRY)
            clock.advance(BACKOFF_MAX)
        provider.fail_with = None
        credential = await cache.get(REGISTRY)
        clock.advance(HOUR)  # expired: must re-mint at once, no leftover backoff
        provider.fail_with = CredentialUnavailable("prod: down")
        with pytest.raises(CredentialUnavailable, match="prod: down$"):
            await cache.get(REGISTRY)
        return credential

    assert run(scenario()).password == "password-4"
    assert provider.calls == 5


EXPECTED_DELAYS = [BACKOFF_MIN * 2**n for n in range(6)] + [BACKOFF_MAX, BACKOFF_MAX]


def test_failures_back_off_exponentially_up_to_the_cap(cache: CredentialCache, clock: Clock,
                                                       provider: FakeProvider) -> None:
    assert EXPECTED_DELAYS[:4] == [5.0, 10.0, 20.0, 40.0]
    provider.fail_with = CredentialUnavailable("prod: AWS call failed: EndpointConnectionError")

    async def scenario() -> None:
        with pytest.raises(CredentialUnavailable):
            await cache.get(REGISTRY)
        for attempt, delay in enumerate(EXPECTED_DELAYS, start=2):
            clock.advance(delay - 0.5)
            for _ in range(20):  # many admissions inside the backoff window: no mint
                with pytest.raises(CredentialUnavailable, match=r"next attempt in \d+s"):
                    await cache.get(REGISTRY)
            assert provider.calls == attempt - 1
            clock.advance(0.5)
            with pytest.raises(CredentialUnavailable, match="EndpointConnectionError"):
                await cache.get(REGISTRY)
            assert provider.calls == attempt

    run(scenario())


def test_refresh_ahead_failure_waits_out_the_backoff(cache: CredentialCache, clock: Clock,
                                                     provider: FakeProvider) -> None:
    async def scenario() -> None:
        await cache.get(REGISTRY)
        provider.fail_with = CredentialUnavailable("prod: down")
        clock.advance(HOUR * 2 / 3)
        for _ in range(50):
            await cache.get(REGISTRY)
            await settle()
        assert provider.calls == 2  # one refresh attempt, then the backoff holds
        clock.advance(BACKOFF_MIN)
        await cache.get(REGISTRY)
        await settle()
        assert provider.calls == 3

    run(scenario())


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RuntimeError(f"boom with {SECRET}"), id="unexpected-exception"),
        pytest.param(KeyError(SECRET), id="key-error"),
    ],
)
def test_provider_bugs_become_credential_unavailable_without_their_message(
    cache: CredentialCache, provider: FakeProvider, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    provider.fail_with = error
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialUnavailable) as raised:
        run(cache.get(REGISTRY))
    assert str(raised.value) == f"prod: provider error {type(error).__name__}"
    assert raised.value.__context__ is None and raised.value.__cause__ is None  # no chained original
    assert SECRET not in caplog.text
    assert all(SECRET not in repr(vars(record)) for record in caplog.records)


def test_unknown_type_is_unavailable(clock: Clock, metrics: Metrics) -> None:
    cache = CredentialCache({}, FakeMaterial(), metrics, clock=clock)
    with pytest.raises(CredentialUnavailable, match="no provider for type ecr"):
        run(cache.get(REGISTRY))


# --- already-expired and very short credentials --------------------------------------------


@pytest.mark.parametrize(
    ("life", "outcome"),
    [
        pytest.param(-10 * 365 * 24 * HOUR, "expired", id="years-ago"),  # moto's 2015-01-01
        pytest.param(0.0, "expired", id="expiring-now"),
        pytest.param(MIN_LIFE - 1, "expired", id="seconds-left"),
        pytest.param(MIN_LIFE, "success", id="minimum-life"),
        pytest.param(12 * HOUR, "success", id="twelve-hours"),
    ],
)
def test_short_or_expired_credentials_are_used_and_counted(
    clock: Clock, metrics: Metrics, life: float, outcome: str
) -> None:
    provider = FakeProvider(clock, life=life)
    cache = CredentialCache({"ecr": provider}, FakeMaterial(), metrics, clock=clock)
    credential = run(cache.get(REGISTRY))
    assert credential.password == "password-1"
    assert cache.peek(REGISTRY) is credential
    assert sample(metrics, "regcred_token_mints_total", registry="prod", outcome=outcome) == 1
    assert sample(metrics, "regcred_token_expiry_timestamp_seconds", registry="prod") == T0 + life


def test_expired_on_arrival_backs_off_instead_of_reminting(
    clock: Clock, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    provider = FakeProvider(clock, life=-HOUR)
    cache = CredentialCache({"ecr": provider}, FakeMaterial(), metrics, clock=clock)

    async def scenario() -> list[int]:
        calls = []
        for delay in (BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN):
            for _ in range(100):  # a burst of admissions reuses the token it was just handed
                assert (await cache.get(REGISTRY)).password == f"password-{provider.calls}"
                await settle()
            calls.append(provider.calls)
            clock.advance(delay)
        return calls

    with caplog.at_level(logging.WARNING, logger="webhook.credentialcache"):
        assert run(scenario()) == [1, 2, 3]
    assert sample(metrics, "regcred_token_mints_total", registry="prod", outcome="expired") == 3
    assert "already expired" in caplog.text


# --- metrics --------------------------------------------------------------------------------


def test_metrics_of_a_mint_a_failure_and_a_refresh(cache: CredentialCache, clock: Clock, provider: FakeProvider,
                                                   metrics: Metrics) -> None:
    async def scenario() -> None:
        await cache.get(REGISTRY)
        clock.advance(HOUR * 2 / 3)
        provider.fail_with = CredentialUnavailable("prod: down")
        await cache.get(REGISTRY)
        await settle()
        clock.advance(BACKOFF_MIN)
        provider.fail_with = None
        await cache.get(REGISTRY)
        await settle()

    run(scenario())
    mints = {
        outcome: sample(metrics, "regcred_token_mints_total", registry="prod", outcome=outcome)
        for outcome in ("success", "failure", "expired")
    }
    assert mints == {"success": 2, "failure": 1, "expired": None}
    assert sample(metrics, "regcred_token_expiry_timestamp_seconds", registry="prod") == clock.now + HOUR
    assert sample(metrics, "regcred_token_mint_duration_seconds_count", provider="ecr") == 3
    assert sample(metrics, "regcred_token_mint_duration_seconds_sum", provider="ecr") >= 0
