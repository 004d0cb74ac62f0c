"""Cluster-mode regcred through Kubernetes API faults: 500s, 429 with Retry-After, timeouts,
watch streams that drop or end with 410 Gone.

One regcred (``cluster.build`` + ``cluster.start``, the wiring ``regcred serve`` uses) runs
against the fake API server. Credentials are ECR-like tokens living 120 s on a clock the test
moves. Each case, table-driven over fault kinds:

1. warm up: three namespaces get their pull Secret;
2. the fault starts. While it lasts, in the API behind regcred's back: the credentials are
   rotated, one pull Secret is deleted, one is overwritten with junk, one appears in another
   namespace (another writer), and the clock moves past every token's expiry, so every Secret
   regcred wrote is now stale;
3. admissions keep arriving (cold namespaces and a warm one) and are counted;
4. the fault ends. Recovery means: regcred's Secret cache equals the API's Secrets again, to
   the resourceVersion (the deletion, the overwrite and the addition were seen: relisted or
   resumed), and every managed Secret holds an unexpired token minted from the rotated
   password. (Whether the deleted Secret is back depends on timing: a refresher pass that runs
   before the relist finds it gone on update and creates it. Both outcomes are consistent.)

Outcomes asserted: no admission denied or failed, every one references the pull Secret, and
recovery happens. Outages last 2 s, one 10 s so the informers' relist backoff shows. Figures
(admissions, warnings, seconds to recovery) are printed per case.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

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

WARM = ["warm-deleted", "warm-tampered", "warm-busy"]
COLD = [f"cold-{i}" for i in range(6)]
ADDED = "added-elsewhere"  # gets a managed Secret from another writer during the outage
LIFE = 120.0
OUTAGE_SECONDS = 2.0
MAX_ADMISSIONS = 60  # during one outage; paced, so the loop is bounded in count and in time
# The watches retry after 0.1 s, doubling up to 1 s, and a failed admission-time write is
# repaired after 0.2 s, then every second: what a fault leaves behind is the same as with the
# shipped schedules (watches 0.5 s doubling to 30 s; repairs 0.5, 1, 2, 5, 10, 30 s ...),
# found sooner (a 10 s outage cost another 10 s of waiting for the 10 s repair step).
RELIST_BACKOFF = (0.1, 1.0)
REPAIR_DELAYS = (0.2,) + (1.0,) * 30
RECOVERY_TIMEOUT = 20.0


@dataclass
class Fault:
    """How one fault kind starts, is kept up during the outage, and ends."""

    begin: callable
    tick: callable = lambda api: None  # called every pacing step while the fault lasts
    end: callable = lambda api: api.clear_faults()
    seconds: float = OUTAGE_SECONDS


def _break_streams(api: FakeApiServer, arm) -> None:
    arm(api)  # armed first: the informers' reconnects must already meet the fault
    api.drop_watches()


FAULTS = [
    pytest.param(Fault(lambda api: _break_streams(api, lambda a: a.fail_next(10**6, status=500))), id="500"),
    # Long enough for the informers' relist backoff (0.5 s doubling, 30 s cap) to grow.
    pytest.param(Fault(lambda api: _break_streams(api, lambda a: a.fail_next(10**6, status=500)), seconds=10.0),
                 id="500-for-10s"),
    pytest.param(Fault(lambda api: _break_streams(api, lambda a: a.fail_next(10**6, status=429, retry_after=1))),
                 id="429-retry-after"),
    pytest.param(Fault(lambda api: _break_streams(api, lambda a: a.hang_next(10**6, seconds=1.5))), id="timeout"),
    pytest.param(Fault(lambda api: api.drop_watches(), tick=lambda api: api.drop_watches(), end=lambda api: None),
                 id="watch-drop"),
    pytest.param(Fault(lambda api: api.expire_watches(), tick=lambda api: api.expire_watches(), end=lambda api: None),
                 id="watch-410-gone"),
]


@pytest.fixture
def api():
    with FakeApiServer() as server:
        seed_cluster(server, WARM + COLD + [ADDED])
        yield server


def tamper(api: FakeApiServer, namespace: str) -> None:
    """Someone overwrites our Secret (still labelled ours) with a credential that is not ours."""
    secret = api.get_object("secrets", namespace, SECRET_NAME)
    junk = json.dumps({"auths": {"registry.example.com/team": {"username": "x", "password": "junk"}}})
    api.put_object("secrets", {**secret, "data": {".dockerconfigjson": base64.b64encode(junk.encode()).decode()}})


async def outage(api: FakeApiServer, regcred: Instance, clock: Clock, fault: Fault) -> list[tuple[int, dict]]:
    """Start the fault, change things behind regcred's back, admit Pods until it ends."""
    fault.begin(api)
    clock.advance(LIFE + 1)  # every token regcred wrote has now expired
    set_password(api, "pass-2")
    stale = api.get_object("secrets", "warm-deleted", SECRET_NAME)
    api.delete_object("secrets", "warm-deleted", SECRET_NAME)
    api.put_object("secrets", {**stale, "metadata": {k: v for k, v in stale["metadata"].items()
                                                     if k in ("name", "labels", "annotations")}}, ADDED)
    tamper(api, "warm-tampered")
    admissions = []
    ends = time.monotonic() + fault.seconds
    targets = COLD + ["warm-busy"]
    while time.monotonic() < ends and len(admissions) < MAX_ADMISSIONS:
        admissions.append(asyncio.ensure_future(regcred.admit(targets[len(admissions) % len(targets)])))
        fault.tick(api)
        await asyncio.sleep(fault.seconds / 40)
    fault.end(api)
    return await asyncio.gather(*admissions)


def not_yet_recovered(api: FakeApiServer, regcred: Instance, clock: Clock) -> list[str]:
    """What still differs from a recovered state; empty once recovered."""
    in_api = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in managed_secrets(api)}
    cached = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in regcred.cluster.secrets.managed()}
    problems = [f"cache differs on {key}" for key in in_api.keys() | cached.keys()
                if (in_api.get(key) or {}).get("metadata", {}).get("resourceVersion")
                != (cached.get(key) or {}).get("metadata", {}).get("resourceVersion")]
    problems += [f"{key} holds an old credential" for key, s in in_api.items()
                 if not password_of(s).startswith("pass-2.")]
    problems += [f"{key} expired" for key, s in in_api.items() if expires_at(s) <= clock()]
    missing = set(WARM[1:] + COLD + [ADDED]) - {namespace for namespace, _ in in_api}
    return problems + [f"{namespace} has no Secret" for namespace in sorted(missing)]


@pytest.mark.parametrize("fault", FAULTS)
def test_admissions_survive_the_fault_and_secrets_recover(api, fault, request) -> None:
    clock = Clock.starting_now()

    async def main() -> dict:
        regcred = await Instance(api, identity="solo", clock=clock, relist_backoff=RELIST_BACKOFF,
                                 repair_delays=REPAIR_DELAYS,
                                 providers={"basic": ExpiringProvider(clock, LIFE)}).start()
        try:
            await eventually(lambda: regcred.leading, timeout=10, what="leadership")
            for namespace in WARM:
                status, response = await regcred.admit(namespace)
                assert status == 200 and response["allowed"] and not response.get("warnings")
            await eventually(lambda: len(regcred.cluster.secrets.managed()) == len(WARM), what="warm cache")

            started = time.monotonic()
            answers = await outage(api, regcred, clock, fault)
            cleared = time.monotonic()
            try:
                await eventually(lambda: not not_yet_recovered(api, regcred, clock), timeout=RECOVERY_TIMEOUT)
            except AssertionError:
                pytest.fail(f"not recovered: {not_yet_recovered(api, regcred, clock)}")
            recovery = time.monotonic() - cleared, time.monotonic() - started
            # The deleted Secret is known to be gone: the next Pod there gets it written again.
            status, response = await regcred.admit("warm-deleted")
            assert status == 200 and response["allowed"]
            assert password_of(api.get_object("secrets", "warm-deleted", SECRET_NAME)).startswith("pass-2.")
            return {"answers": answers, "recovery_s": recovery}
        finally:
            await regcred.stop()

    outcome = asyncio.run(main())
    answers = outcome["answers"]
    denied = [a for a in answers if a[0] != 200 or a[1].get("allowed") is not True]
    unreferenced = [a for a in answers if "patch" not in a[1]]
    warned = [a for a in answers if a[1].get("warnings")]
    print(f"\nFIGURES api-fault {request.node.callspec.id}: admissions={len(answers)} denied={len(denied)} "
          f"without_patch={len(unreferenced)} with_warning={len(warned)} "
          f"recovered_after_fault_s={outcome['recovery_s'][0]:.2f} "
          f"consistent_after_start_s={outcome['recovery_s'][1]:.2f}")
    assert answers and not denied and not unreferenced
