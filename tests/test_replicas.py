"""Two cluster-mode replicas on one API server: no lost updates, no write ping-pong, failover.

Each replica is a whole regcred (``cluster.build`` + ``cluster.start``, see tests/support/kube)
with its own identity, client, caches, token cache and credential provider: like two ECR
replicas, each mints its own token, so the two always want different Secret contents. Each
replica's leader elector runs on a clock only the test moves (leases of 15 s that expire when
the test says, never because the machine was slow); the refresher runs every 0.5 s. Writes
are counted per Secret from the fake API server's request log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import Clock
from tests.support.kube import (
    SECRET_NAME,
    ExpiringProvider,
    Instance,
    eventually,
    expires_at,
    managed_secrets,
    password_of,
    seed_cluster,
    set_password,
)
from webhook.kube.leader import LeaseTimings

TEAMS = [f"team-{i}" for i in range(8)]
LIFE = 600.0
STEADY_SECONDS = 3.0  # six refresh intervals
WRITES = ("create", "update", "patch")
LEASE = LeaseTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=0.25)


@pytest.fixture
def api():
    with FakeApiServer() as server:
        seed_cluster(server, TEAMS)
        yield server


def writes_per_secret(api: FakeApiServer) -> Counter:
    return Counter(r.namespace for r in api.requests
                   if r.resource == "secrets" and r.verb in WRITES and r.name in (SECRET_NAME, None)
                   and r.namespace in TEAMS and r.status < 300)


def sample(replica: Instance, name: str, **labels: str) -> float:
    return replica.deps.metrics.registry.get_sample_value(name, labels) or 0.0


async def start_pair(api: FakeApiServer, clocks: tuple[Clock, Clock]) -> tuple[Instance, Instance]:
    """(leader, follower): replica a is started first and leads, so the second clock is the follower's."""
    leader, follower = [Instance(api, identity=f"replica-{tag}", clock=clock, lease=LEASE, lease_clock=Clock(0.0),
                                 providers={"basic": ExpiringProvider(clock, LIFE, tag=tag)})
                        for tag, clock in zip("ab", clocks, strict=True)]
    await leader.start()
    await eventually(lambda: leader.leading, timeout=10, what="a leader")
    await follower.start()
    return leader, follower


async def admit_everywhere(replicas, rounds: int) -> list[tuple[int, dict]]:
    """Every team admitted through both replicas at once, ``rounds`` times."""
    answers = []
    for _ in range(rounds):
        answers += await asyncio.gather(*(r.admit(team) for team in TEAMS for r in replicas))
    return answers


async def steady_state(api: FakeApiServer, replicas, answers: list) -> tuple[Counter, int]:
    """Writes per Secret over STEADY_SECONDS of admissions through both replicas (bounded rounds)."""
    api.reset_log()
    ends = time.monotonic() + STEADY_SECONDS
    rounds = 0
    while time.monotonic() < ends and rounds < 30:
        answers += await admit_everywhere(replicas, rounds=1)
        rounds += 1
        await asyncio.sleep(0.1)
    return writes_per_secret(api), rounds


async def advance_until(clock: Clock, condition, limit: float = 60.0) -> float:
    """Move a replica's lease clock a second at a time (each after real time enough for a retry
    period) until ``condition``; the clock's seconds that took."""
    for moved in range(int(limit) + 1):
        if condition():
            return float(moved)
        await asyncio.sleep(LEASE.retry_period)
        if condition():
            return float(moved)
        clock.advance(1.0)
    raise AssertionError(f"not reached within {limit} s of the lease clock")


def converged(api: FakeApiServer, password: str) -> bool:
    secrets = {s["metadata"]["namespace"]: s for s in managed_secrets(api)}
    return set(secrets) == set(TEAMS) and all(password_of(s).startswith(password + ".") for s in secrets.values())


@pytest.mark.parametrize(("skew", "elapsed", "follower_admits"), [
    # B's first token is minted 5 s after A's, and a minute passes before the rotation: every
    # new mint expires later than every older one, as with real clocks.
    pytest.param(5.0, 60.0, True, id="replicas-mint-at-different-times"),
    # Tokens expiring in the same second (the annotation has 1 s resolution): once made each
    # replica rewrote the other's Secret on every admission and every refresh pass.
    pytest.param(0.0, 60.0, True, id="replicas-mint-in-the-same-second"),
    # The rival's token was minted from the old credentials but expires last (skew here; a
    # follower whose credentials watch lags gets there too), and no Pod reaches the follower:
    # once "the token expiring last wins" kept the rival's until the leader's next re-mint.
    pytest.param(5.0, 0.0, False, id="rival-token-from-old-credentials-outlives-rotation"),
])
def test_two_replicas_converge_without_lost_updates_or_ping_pong(api, skew, elapsed, follower_admits,
                                                                  request) -> None:
    first = Clock.starting_now()
    second = Clock.starting_now()
    second.advance(skew)

    async def main() -> dict:
        leader, follower = await start_pair(api, (first, second))
        try:
            answers = await admit_everywhere((leader, follower), rounds=3)
            await eventually(lambda: converged(api, "pass-1"), what="first Secrets")
            first.advance(elapsed)
            second.advance(elapsed)
            # An update that must not be lost to a replica still holding the old credential.
            set_password(api, "pass-2")
            await eventually(lambda: all(r.cluster.material.read("private-creds")["password"] == b"pass-2"
                                         for r in (leader, follower)), what="both saw the rotation")
            answers += await admit_everywhere((leader, follower) if follower_admits else (leader,), rounds=2)
            await eventually(lambda: converged(api, "pass-2"), timeout=15, what="rotation everywhere")
            settled = writes_per_secret(api)
            steady, rounds = await steady_state(api, (leader, follower), answers)
            holders = {password_of(s).rsplit(".", 1)[1][0] for s in managed_secrets(api)}
            return {"holders": holders, "answers": answers, "settled": settled, "steady": steady, "rounds": rounds,
                    "follower_refresh_writes": sum(sample(follower, "regcred_refresh_secret_writes_total",
                                                          registry="private", operation=op)
                                                   for op in ("created", "updated")),
                    "follower_skipped": sample(follower, "regcred_refresh_runs_total", outcome="skipped")}
        finally:
            await asyncio.gather(leader.stop(), follower.stop())

    outcome = asyncio.run(main())
    print(f"\nFIGURES replicas {request.node.callspec.id}: admissions={len(outcome['answers'])} "
          f"writes_per_secret_until_converged(max)={max(outcome['settled'].values())} "
          f"steady_rounds={outcome['rounds']} steady_writes={sum(outcome['steady'].values())}")
    assert all(status == 200 and response["allowed"] for status, response in outcome["answers"])
    # create, the leader replacing a Secret the follower created, the rotation by the leader
    assert max(outcome["settled"].values()) <= 3
    assert sum(outcome["steady"].values()) == 0, f"ping-pong: {dict(outcome['steady'])}"
    assert outcome["holders"] == {"a"}  # every Secret holds the leader's token (replica a's)
    assert outcome["follower_refresh_writes"] == 0 and outcome["follower_skipped"] > 0  # only the leader refreshes


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_the_other_replica_takes_over_refreshing(api, how) -> None:
    clock = Clock.starting_now()

    async def main() -> dict:
        leader, follower = await start_pair(api, (clock, clock))
        try:
            await admit_everywhere((leader,), rounds=1)
            await eventually(lambda: converged(api, "pass-1"), what="first Secrets")
            gone = time.monotonic()
            await (leader.stop() if how == "stop" else leader.crash())
            set_password(api, "pass-2")  # only a refresher pass writes this everywhere
            # Released: taken at once. Abandoned: once it has stayed unchanged a whole lease on
            # the follower's clock, which the test moves a second at a time.
            waited = await advance_until(follower.lease_clock, lambda: follower.leading)
            assert waited == 0 if how == "stop" else LEASE.lease_duration <= waited <= LEASE.lease_duration + 3
            took_over = time.monotonic() - gone
            await eventually(lambda: converged(api, "pass-2"), timeout=15, what="refreshed by the new leader")
            refreshed = time.monotonic() - gone
            fresh = all(expires_at(s) > clock() for s in managed_secrets(api))
            return {"took_over": took_over, "refreshed": refreshed, "fresh": fresh, "waited": waited}
        finally:
            await follower.stop()

    outcome = asyncio.run(main())
    print(f"\nFIGURES failover {how}: lease_duration_s={LEASE.lease_duration} lease_clock_waited_s={outcome['waited']} "
          f"leader_after_s={outcome['took_over']:.2f} secrets_refreshed_after_s={outcome['refreshed']:.2f}")
    assert outcome["fresh"]
