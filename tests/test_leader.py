"""Lease leader election between instances sharing one fake API server.

Each candidate runs on a clock of its own that only the test moves: leases of controller-
runtime's length (15 s, renew deadline 10 s) expire when the test says, never because the
machine was slow, and a takeover is checked to wait out the whole lease. Only the retry
period is real time, and short, so the candidates' loops turn quickly.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import Clock
from tests.support.kube import SHORT_LEASE, Instance, eventually, kube_client, seed_cluster
from webhook.kube.leader import LeaderElector, LeaseTimings, default_identity
from webhook.metrics import Metrics

NS = "regcred"
TIMING = LeaseTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=0.05)


class Candidate:
    """One regcred instance campaigning: its own client, metrics and stop event."""

    def __init__(self, server: FakeApiServer, identity: str):
        self.client = kube_client(server)
        self.metrics = Metrics()
        self.clock = Clock(0.0)
        self.elector = LeaderElector(self.client, namespace=NS, identity=identity, metrics=self.metrics, timings=TIMING,
                                     clock=self.clock)
        self.stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.elector.run(self.stop))

    @property
    def leading(self) -> bool:
        return self.elector.is_leader

    async def crash(self) -> None:
        """Stop renewing without releasing, as a killed Pod would."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.client.close()

    async def shutdown(self) -> None:
        self.stop.set()
        await self.task
        self.client.close()


@pytest.fixture
def server():
    with FakeApiServer(namespaces=("default", NS)) as fake:
        yield fake


def gauge(candidate: Candidate) -> float:
    return candidate.metrics.registry.get_sample_value("regcred_leader")


def holder(server: FakeApiServer) -> str | None:
    lease = server.get_object("leases", NS, "regcred")
    return lease and lease["spec"].get("holderIdentity")


async def campaign(server: FakeApiServer) -> tuple[Candidate, Candidate]:
    a, b = Candidate(server, "a"), Candidate(server, "b")
    await eventually(lambda: a.leading or b.leading, what="a leader")
    return (a, b) if a.leading else (b, a)


def test_only_one_instance_leads(server):
    async def main():
        leader, follower = await campaign(server)
        for _ in range(10):  # several renew periods: still exactly one
            assert leader.leading and not follower.leading
            await asyncio.sleep(0.1)
        assert holder(server) == leader.elector.identity
        assert gauge(leader) == 1 and gauge(follower) == 0
        await leader.shutdown()
        await follower.shutdown()

    asyncio.run(main())


async def advance_until(clock: Clock, condition, step: float = 0.5, limit: float = 60.0) -> float:
    """Move ``clock`` on ``step`` seconds at a time (each after a real moment, for the
    candidates' loops to turn) until ``condition``; the clock's seconds that took."""
    for moved in range(int(limit / step) + 1):
        if condition():
            return moved * step
        await asyncio.sleep(0.1)
        clock.advance(step)
    raise AssertionError(f"not reached within {limit} s of the clock")


@pytest.mark.parametrize(("how", "least", "most"), [
    # Not before the Lease, unchanged, has lasted its whole duration on the follower's own
    # clock (which first has to see the last renewal: a step or so more).
    pytest.param("crash", TIMING.lease_duration, TIMING.lease_duration + 2, id="crash-waits-out-the-lease"),
    pytest.param("shutdown", 0.0, 1.0, id="a-released-lease-is-taken-at-once"),
])
def test_the_follower_takes_over(server, how, least, most):
    async def main():
        leader, follower = await campaign(server)
        await getattr(leader, how)()
        waited = await advance_until(follower.clock, lambda: follower.leading)
        assert least <= waited <= most
        assert holder(server) == follower.elector.identity
        assert server.get_object("leases", NS, "regcred")["spec"]["leaseTransitions"] == 1
        await follower.shutdown()

    asyncio.run(main())


def test_clean_stop_releases_the_lease(server):
    async def main():
        leader = Candidate(server, "solo")
        await eventually(lambda: leader.leading)
        await leader.shutdown()
        assert not leader.leading
        assert holder(server) == ""
        assert gauge(leader) == 0

    asyncio.run(main())


def test_leader_steps_down_when_it_cannot_renew(server):
    async def main():
        leader, follower = await campaign(server)
        server.forbid(verb="update", resource="leases")  # RBAC broken or API unreachable for writes
        await asyncio.sleep(0.3)  # several failed renewals
        assert leader.leading  # its renew deadline has not passed
        waited = await advance_until(leader.clock, lambda: not leader.leading)
        assert TIMING.renew_deadline <= waited <= TIMING.renew_deadline + 2  # a few of the test's steps late
        assert not follower.leading  # it cannot write the Lease either
        server.allow()
        await eventually(lambda: leader.leading or follower.leading, timeout=5, what="a new term")
        await leader.shutdown()
        await follower.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("stall", [
    pytest.param(lambda server: server.fail_next(10**6, status=429, resource="leases", retry_after=10),
                 id="429-retry-after"),
    pytest.param(lambda server: server.hang_next(10**6, seconds=30, resource="leases"), id="hung-api-server"),
])
def test_leader_steps_down_at_the_deadline_while_its_calls_stall(server, stall):
    """A renewal stuck in retries or on a slow server must not outlive the renew deadline."""
    async def main():
        leader, follower = await campaign(server)
        leader.client.request_timeout = 30.0  # a stalled call alone would outlast the lease
        stall(server)
        await asyncio.sleep(0.3)
        assert leader.leading  # stalled, but within its deadline
        waited = await advance_until(leader.clock, lambda: not leader.leading)
        assert waited <= TIMING.renew_deadline + 2
        assert gauge(leader) == 0
        server.clear_faults()
        await leader.crash()
        await follower.crash()

    asyncio.run(main())


def test_on_change_hears_both_transitions(server):
    async def main():
        heard: list[bool] = []
        client = kube_client(server)
        elector = LeaderElector(client, namespace=NS, identity=default_identity(), on_change=heard.append,
                                timings=TIMING)
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(elector.run(stop))
        await eventually(lambda: heard == [True])
        stop.set()
        await task
        client.close()
        assert heard == [True, False]

    asyncio.run(main())


@pytest.mark.parametrize(("lease_duration", "renew_deadline", "retry_period"), [
    pytest.param(1, 2, 0.5, id="renew-deadline-past-the-lease"),
    pytest.param(15, 10, 10, id="retry-not-before-the-deadline"),
])
def test_inconsistent_durations_are_refused(lease_duration, renew_deadline, retry_period):
    with pytest.raises(ValueError):
        LeaseTimings(lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period)


def test_leadership_holds_while_a_slow_api_server_keeps_every_worker_writing():
    """Admission writes against a slow API server fill every request worker for seconds; the
    Lease renewals of ``regcred serve``'s wiring must still get through (their own thread)."""
    teams = [f"team-{i}" for i in range(48)]
    with FakeApiServer() as api:
        seed_cluster(api, teams)

        async def main():
            replica = await Instance(api, identity="solo", lease=SHORT_LEASE).start()
            await eventually(lambda: replica.leading, timeout=10, what="leading")
            api.hang_next(10**6, seconds=0.9, verb="create", resource="secrets")  # just under the client's timeout
            admissions = asyncio.gather(*(replica.admit(team) for team in teams))
            lost = 0
            while not admissions.done():
                lost += not replica.leading
                await asyncio.sleep(0.02)
            api.clear_faults()
            assert lost == 0
            assert api.count(verb="create", resource="secrets") >= 16  # the workers were all busy
            await replica.stop()

        asyncio.run(main())
