"""KubeSecretStore against the fake API server, through the real kubernetes client.

The request log is the witness: the warm path makes no request at all, the cold path makes
exactly the writes the issue describes, and a Secret without the managed-by label is never
written or deleted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import REGISTRY, Clock, FakeMaterial, FakeProvider
from tests.support.kube import (
    REQUEST_TIMEOUT,
    CountingBucket,
    auths,
    eventually,
    kube_client,
)
from webhook.credentialcache import CredentialCache
from webhook.kube.client import KubeClient
from webhook.kube.informer import Informer
from webhook.kube.secretstore import (
    URGENT_LIMIT,
    KubeSecretStore,
    managed_secrets_informer,
)
from webhook.metrics import Metrics
from webhook.providers import Credential
from webhook.provisioner import Provisioner
from webhook.pullsecrets import NamespaceGone, SecretWriteError, build_pull_secret
from webhook.registries import parse_registries
from webhook.secretwriter import SecretWriter

NS = "default"
NAME = "regcred-hub"
HUB = parse_registries("registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: x}\n").registries[0]
SOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EXPIRED = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)


def desired(password: str = "pw-1", namespace: str = NS, expires_at: datetime | None = None) -> dict:
    return build_pull_secret(HUB, Credential("robot", password, expires_at), namespace)


def writes(server: FakeApiServer) -> int:
    return sum(server.count(verb=verb, resource="secrets") for verb in ("create", "update", "patch", "delete"))


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def run_with_store(server: FakeApiServer, scenario, *, start: bool = True, informer=None, **options):
    """Run ``scenario(store, informer)`` on a fresh loop with a store on the fake."""

    async def main():
        client = kube_client(server)
        cache = informer(client) if informer else managed_secrets_informer(client, backoff=(0.05, 0.2))
        store = SecretWriter(KubeSecretStore(client, cache), **options)
        if start:
            store.store.start()
            await asyncio.wait_for(store.store.synced.wait(), 5)
        try:
            return await scenario(store, cache)
        finally:
            await store.stop()
            client.close()

    return asyncio.run(main())


def test_warm_path_makes_zero_api_calls(server):
    async def scenario(store, cache):
        assert (await store.ensure(desired())).outcome == "created"
        await eventually(lambda: store.cached(NS, NAME) is not None, what="watch to deliver our Secret")
        server.reset_log()
        outcomes = await asyncio.gather(*(store.ensure(desired()) for _ in range(50)))
        assert {o.outcome for o in outcomes} == {"unchanged"}
        assert await store.ensure(desired(), dry_run=True) == outcomes[0]
        assert server.requests == []

    run_with_store(server, scenario)


def test_cold_path_creates_a_labelled_dockerconfigjson_secret(server):
    server.add_namespace("team-a")

    async def scenario(store, cache):
        assert (await store.ensure(desired(namespace="team-a"))).outcome == "created"

    run_with_store(server, scenario)
    stored = server.get_object("secrets", "team-a", NAME)
    assert stored["type"] == "kubernetes.io/dockerconfigjson"
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "regcred", "regcred.io/registry": "hub"}
    assert auths(stored)["docker.io/acme"]["password"] == "pw-1"
    assert server.count(verb="create", resource="secrets") == 1


def managed(password: str, expires_at: datetime | None = None, **labels: str) -> dict:
    secret = desired(password, expires_at=expires_at)
    secret["metadata"]["labels"].update(labels)
    return secret


def foreign() -> dict:
    secret = desired("someone-elses")
    secret["metadata"]["labels"] = {"team": "payments"}
    return secret


def moved(password: str) -> dict:
    """Ours and fresh, but written while the registry had another url (the list changed since)."""
    registry = parse_registries("registries:\n- {id: hub, url: docker.io/other, type: basic, secretRef: x}\n")
    return build_pull_secret(registry.registries[0], Credential("robot", password, None), NS)


def newer_mint() -> dict:
    return desired("minted-later", expires_at=SOON + timedelta(hours=1))


# (existing, wanted, authoritative, outcome, password stored). An admission keeps a fresh
# managed Secret for the same url (writepolicy.may_keep, tabled in test_secretstore_rules);
# the refresher (authoritative) replaces whatever differs, however fresh.
EXISTING = [
    pytest.param(managed("old-pw", backup="yes"), desired(), True, "updated", "pw-1", id="refresher-replaces-ours"),
    pytest.param(managed("old-pw", backup="yes"), desired(), False, "unchanged", "old-pw",
                 id="admission-keeps-ours-fresh"),
    pytest.param(managed("old-pw", EXPIRED), desired(expires_at=SOON), False, "updated", "pw-1",
                 id="admission-replaces-ours-expired"),
    pytest.param(managed("pw-1"), desired(), False, "unchanged", "pw-1", id="ours-current-unchanged"),
    pytest.param(moved("old-pw"), desired(), False, "updated", "pw-1", id="admission-replaces-ours-for-another-url"),
    pytest.param(foreign(), desired(), False, "conflict", "someone-elses", id="foreign-never-touched"),
    pytest.param(foreign(), desired(), True, "conflict", "someone-elses", id="foreign-never-touched-by-the-refresher"),
    pytest.param(newer_mint(), desired(expires_at=SOON), False, "unchanged", "minted-later",
                 id="admission-keeps-a-newer-mint"),
    pytest.param(desired("older", expires_at=SOON), newer_mint(), False, "unchanged", "older",
                 id="admission-keeps-an-older-fresh-mint"),
    # The lost rotation: a rival's token from the old credentials expires after the leader's.
    pytest.param(newer_mint(), desired(expires_at=SOON), True, "updated", "pw-1", id="refresher-replaces-a-newer-mint"),
]


@pytest.mark.parametrize(("existing", "wanted", "authoritative", "outcome", "password"), EXISTING)
def test_already_exists_from_another_writer(server, existing, wanted, authoritative, outcome, password):
    before = server.put_object("secrets", existing, NS)
    server.reset_log()

    async def scenario(store, cache):  # the cache has not seen it: the create runs into it
        assert (await store.ensure(wanted, authoritative=authoritative)).outcome == outcome
        server.reset_log()
        again = await store.ensure(wanted, authoritative=authoritative)  # answered from memory
        assert again.outcome == ("unchanged" if outcome == "updated" else outcome)
        assert server.count() == 0

    run_with_store(server, scenario, start=False)
    stored = server.get_object("secrets", NS, NAME)
    assert auths(stored)["docker.io/acme"]["password"] == password
    if outcome != "updated":
        assert stored["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_user_labels_survive_a_replace(server):
    server.put_object("secrets", managed("old-pw", backup="yes"), NS)

    async def scenario(store, cache):
        await eventually(lambda: store.cached(NS, NAME) is not None)
        assert (await store.ensure(desired(), authoritative=True)).outcome == "updated"

    run_with_store(server, scenario)
    assert server.get_object("secrets", NS, NAME)["metadata"]["labels"]["backup"] == "yes"


@pytest.mark.parametrize(("conflicts", "outcome"), [
    pytest.param(0, "updated", id="stale-cache-conflict-then-retry"),
    pytest.param(10, SecretWriteError, id="endless-conflicts-bounded"),
])
def test_conflict_on_replace_is_retried_with_a_fresh_read(server, conflicts, outcome):
    old = server.put_object("secrets", managed("old-pw"), NS)
    server.put_object("secrets", managed("changed-by-another-replica"), NS)

    async def scenario(store, cache):
        cache.observe(old)  # the cache still holds the version before the other replica's write
        if conflicts:
            server.fail_next(conflicts, status=409, verb="update")
        if outcome is SecretWriteError:
            with pytest.raises(SecretWriteError, match="still conflicting"):
                await store.ensure(desired(), authoritative=True)
            return
        assert (await store.ensure(desired(), authoritative=True)).outcome == outcome

    run_with_store(server, scenario, start=False)
    if outcome == "updated":
        assert server.count(verb="update", status=409) == 1
        assert server.count(verb="update", status=200) == 1
        assert auths(server.get_object("secrets", NS, NAME))["docker.io/acme"]["password"] == "pw-1"
    else:
        assert server.count(verb="update") == 4


def test_concurrent_ensures_share_one_write(server):
    async def scenario(store, cache):
        outcomes = await asyncio.gather(*(store.ensure(desired()) for _ in range(20)))
        assert {o.outcome for o in outcomes} == {"created"}

    run_with_store(server, scenario)
    assert server.count(verb="create", resource="secrets") == 1


def test_two_replicas_converge_without_ping_pong(server):
    """a is the leader (its refresher's writes are authoritative), b only admits Pods."""
    async def main():
        clients = [kube_client(server), kube_client(server)]
        stores = [SecretWriter(KubeSecretStore(c)) for c in clients]
        for store in stores:
            store.store.start()
            await store.store.synced.wait()
        a, b = stores
        first = await asyncio.gather(a.ensure(desired()), b.ensure(desired()))
        assert sorted(o.outcome for o in first) == ["created", "unchanged"]
        # Each replica minted its own token; b's even expires later, and must not win.
        mine, theirs = desired("a-token", expires_at=SOON), desired("b-token", expires_at=SOON + timedelta(hours=1))
        for _ in range(5):
            await a.ensure(mine, authoritative=True)
            await b.ensure(theirs)
            await asyncio.sleep(0.05)
        await eventually(lambda: b.cached(NS, NAME)["data"] == mine["data"], what="b to see a's write")
        assert (await b.ensure(theirs)).outcome == "unchanged"
        for store, client in zip(stores, clients, strict=True):
            await store.stop()
            client.close()

    asyncio.run(main())
    assert server.count(verb="create", status=201) == 1
    assert server.count(verb="update", status=200) == 1  # a's token, once
    assert auths(server.get_object("secrets", NS, NAME))["docker.io/acme"]["password"] == "a-token"


FAILURES = [
    pytest.param(lambda s: s.fail_next(1, status=500, verb="create"), "HTTP 500", id="server-error"),
    pytest.param(lambda s: s.fail_next(1, status=503, verb="create"), "HTTP 503", id="unavailable"),
    pytest.param(lambda s: s.forbid(verb="create", resource="secrets"), "HTTP 403 Forbidden", id="forbidden"),
    pytest.param(lambda s: s.hang_next(1, seconds=5, verb="create"), "timed out", id="hung-request"),
]


@pytest.mark.parametrize(("fault", "message"), FAILURES)
def test_failed_write_raises_a_safe_error_quickly(server, fault, message):
    fault(server)

    async def scenario(store, cache):
        with pytest.raises(SecretWriteError) as raised:
            await asyncio.wait_for(store.ensure(desired("s3cr3t-password")), 4)
        return str(raised.value)

    text = run_with_store(server, scenario)
    assert message in text and "default/regcred-hub" in text
    assert "s3cr3t" not in text and desired("s3cr3t-password")["data"][".dockerconfigjson"] not in text


DRY_RUNS = [
    pytest.param(None, "dry_run", id="absent"),
    pytest.param(foreign(), "conflict", id="foreign"),
    pytest.param(managed("pw-1"), "unchanged", id="ours-current"),
    pytest.param(managed("old-pw"), "unchanged", id="ours-fresh"),
    pytest.param(managed("old-pw", EXPIRED), "dry_run", id="ours-expired"),
]


@pytest.mark.parametrize(("existing", "outcome"), DRY_RUNS)
def test_dry_run_computes_the_outcome_and_writes_nothing(server, existing, outcome):
    if existing is not None:
        server.put_object("secrets", existing, NS)

    async def scenario(store, cache):
        server.reset_log()
        assert (await store.ensure(desired(), dry_run=True)).outcome == outcome

    run_with_store(server, scenario)
    assert writes(server) == 0


@pytest.mark.parametrize(("existing", "deleted"), [
    pytest.param(managed("pw-1"), True, id="managed-deleted"),
    pytest.param(foreign(), False, id="foreign-kept"),
    pytest.param(None, False, id="absent"),
])
def test_delete_only_touches_managed_secrets(server, existing, deleted):
    if existing is not None:
        server.put_object("secrets", existing, NS)

    async def scenario(store, cache):
        assert await store.delete(NS, NAME) is deleted
        assert store.cached(NS, NAME) is None

    run_with_store(server, scenario)
    assert (server.get_object("secrets", NS, NAME) is None) is (existing is None or deleted)
    assert server.count(verb="delete") == int(deleted)


def test_managed_lists_only_labelled_secrets_across_namespaces(server):
    for namespace in ("team-a", "team-b"):
        server.add_namespace(namespace)
    server.put_object("secrets", managed("pw-1"), NS)
    server.put_object("secrets", desired(namespace="team-a"), "team-a")
    server.put_object("secrets", {"metadata": {"name": "unrelated"}}, NS)
    server.put_object("secrets", foreign(), "team-b")

    async def scenario(store, cache):
        return sorted((s["metadata"]["namespace"], s["metadata"]["name"]) for s in store.managed())

    assert run_with_store(server, scenario) == [(NS, NAME), ("team-a", NAME)]


def test_slimmed_cache_drops_managed_fields(server):
    secret = managed("pw-1")
    secret["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    server.put_object("secrets", secret, NS)

    async def scenario(store, cache):
        return store.cached(NS, NAME)

    assert "managedFields" not in run_with_store(server, scenario)["metadata"]


def test_cached_secrets_share_what_they_have_in_common_and_keep_what_a_put_needs(server):
    owner = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1"}]
    for namespace in ("team-a", "team-b"):
        server.add_namespace(namespace)
        secret = desired(namespace=namespace)
        secret["metadata"].update(managedFields=[{"manager": "kubectl"}], ownerReferences=owner,
                                  finalizers=["example.com/keep"])
        server.put_object("secrets", secret, namespace)

    async def scenario(store, cache):
        return store.cached("team-a", NAME), store.cached("team-b", NAME)

    a, b = run_with_store(server, scenario)
    assert a["data"] == desired()["data"] and a["data"] is b["data"]
    assert a["metadata"]["labels"] is b["metadata"]["labels"] and a["type"] is b["type"]
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert {"managedFields", "creationTimestamp"}.isdisjoint(a["metadata"])
    assert a["metadata"]["ownerReferences"] == owner and a["metadata"]["finalizers"] == ["example.com/keep"]


def test_a_replace_from_the_slimmed_cache_keeps_owners_and_finalizers(server):
    stale = managed("old-pw")
    stale["metadata"].update(ownerReferences=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u"}],
                             finalizers=["example.com/keep"])
    created = server.put_object("secrets", stale, NS)

    async def scenario(store, cache):
        assert (await store.ensure(desired(), authoritative=True)).outcome == "updated"

    run_with_store(server, scenario)
    stored = server.get_object("secrets", NS, NAME)
    assert auths(stored)["docker.io/acme"]["password"] == "pw-1"
    assert stored["metadata"]["finalizers"] == ["example.com/keep"]
    assert stored["metadata"]["ownerReferences"][0]["name"] == "o"
    assert stored["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]


def test_an_informer_can_be_given(server):
    """The store takes any Informer (for example one with other paging or backoff)."""

    async def scenario(store, cache):
        assert isinstance(cache, Informer)
        assert (await store.ensure(desired())).outcome == "created"

    run_with_store(server, scenario, informer=lambda c: managed_secrets_informer(c, page_size=1))


@pytest.mark.parametrize(("urgent", "limited"), [
    pytest.param(True, False, id="admission-write-skips-the-shared-limit"),
    pytest.param(False, True, id="background-write-takes-from-the-shared-limit"),
])
def test_urgent_writes_do_not_queue_behind_the_shared_rate_limit(server, urgent, limited):
    namespaces = [f"team-{i}" for i in range(3)]
    for namespace in namespaces:
        server.add_namespace(namespace)
    bucket = CountingBucket()

    async def main():
        client = KubeClient(server.api_client(), limiter=bucket, request_timeout=REQUEST_TIMEOUT)
        store = SecretWriter(KubeSecretStore(client, managed_secrets_informer(client)))
        store.store.start()
        await asyncio.wait_for(store.store.synced.wait(), 5)
        try:
            before = bucket.taken
            outcomes = await asyncio.gather(*(store.ensure(desired(namespace=ns), urgent=urgent) for ns in namespaces))
            return {o.outcome for o in outcomes}, bucket.taken - before
        finally:
            await store.stop()
            client.close()

    outcomes, taken = asyncio.run(main())
    assert outcomes == {"created"}
    assert server.count(verb="create", resource="secrets") == 3
    assert (taken >= 3) is limited and (taken == 0) is not limited


def test_a_failing_write_loses_the_fast_lane_for_a_while(server):
    server.add_namespace("team-a")
    bucket = CountingBucket()
    clock = [100.0]

    async def main():
        client = KubeClient(server.api_client(), limiter=bucket, request_timeout=REQUEST_TIMEOUT)
        store = SecretWriter(KubeSecretStore(client, managed_secrets_informer(client)), failing_ttl=10,
                             clock=lambda: clock[0])
        store.store.start()
        await asyncio.wait_for(store.store.synced.wait(), 5)
        try:
            server.fail_next(2, status=500, verb="create", resource="secrets")
            taken = []
            for _ in range(2):  # fails urgently, then fails again behind the shared limit
                before = bucket.taken
                with pytest.raises(SecretWriteError):
                    await store.ensure(desired(namespace="team-a"), urgent=True)
                taken.append(bucket.taken - before)
            clock[0] += 11  # the memory of the failure has run out: the fast lane again
            before = bucket.taken
            assert (await store.ensure(desired(namespace="team-a"), urgent=True)).outcome == "created"
            return taken + [bucket.taken - before]
        finally:
            await store.stop()
            client.close()

    assert asyncio.run(main()) == [0, 1, 0]


def test_a_rival_replicas_secret_is_warm_only_while_fresh(server):
    """Another replica's Secret for the same registry, with its own token, is kept while fresh
    (``may_keep``); once it is not, the next admission replaces it. The Provisioner's warm check
    must not remember the rival as it remembers a Secret it found current."""
    server.add_namespace("team-a")
    clock = Clock()
    tokens = CredentialCache({"ecr": FakeProvider(clock)}, FakeMaterial(), Metrics(), clock=clock)
    rival_expiry = datetime.fromtimestamp(clock() + 1200, UTC)  # ours lives an hour
    server.put_object("secrets", build_pull_secret(REGISTRY, Credential("user", "rival", rival_expiry), "team-a"))

    async def scenario(store, cache):
        provisioner = Provisioner(tokens, store, Metrics())
        await tokens.get(REGISTRY)
        await eventually(lambda: store.cached("team-a", REGISTRY.secret_name) is not None, what="the rival cached")
        for _ in range(3):  # warm: the rival is kept, nothing written
            [answer] = await provisioner.provision("team-a", [REGISTRY], dry_run=False)
            assert answer.reference and answer.warning is None
        kept = server.count(verb="update", resource="secrets")
        # The rival has 200 s left, under the freshness margin; ours, not yet due for refresh,
        # is the same credential object as before.
        clock.advance(1000)
        await provisioner.provision("team-a", [REGISTRY], dry_run=False)
        return kept, server.count(verb="update", resource="secrets")

    kept, replaced = run_with_store(server, scenario, wall_clock=clock)
    assert (kept, replaced) == (0, 1)
    stored = auths(server.get_object("secrets", "team-a", REGISTRY.secret_name))[REGISTRY.url]
    assert stored["password"] != "rival"


def test_a_write_after_the_client_closed_is_a_write_error(server):
    """At shutdown the worker pool refuses work at once; the store still answers with its own
    error, which the Provisioner turns into a warning, never an escaped RuntimeError."""

    async def main():
        client = kube_client(server)
        store = SecretWriter(KubeSecretStore(client, managed_secrets_informer(client)))
        store.store.start()
        await asyncio.wait_for(store.store.synced.wait(), 5)
        client.close()
        try:
            with pytest.raises(SecretWriteError, match="create Secret default/regcred-hub"):
                await store.ensure(desired(), urgent=True)
        finally:
            await store.stop()

    asyncio.run(main())


def test_urgent_writes_have_a_rate_limit_of_their_own(server):
    qps, burst = URGENT_LIMIT
    more = int(2 * qps)  # two seconds' worth more, at once, right after a whole burst
    namespaces = [f"team-{i}" for i in range(burst + more)]
    for namespace in namespaces:
        server.add_namespace(namespace)

    async def scenario(store, _):
        started = time.monotonic()
        await asyncio.gather(*(store.ensure(desired(namespace=ns), urgent=True) for ns in namespaces[:burst]))
        refilled = (time.monotonic() - started) * qps
        second = time.time()
        await asyncio.gather(*(store.ensure(desired(namespace=ns), urgent=True) for ns in namespaces[burst:]))
        return refilled, second

    refilled, second = run_with_store(server, scenario)
    arrivals = sorted(r.time for r in server.requests if r.verb == "create" and r.resource == "secrets")
    assert len(arrivals) == burst + more
    paced = (more - refilled) / qps  # the seconds the lane must spread the second lot over
    assert paced > 0.2, "the burst took too long for this test to see the limit"
    # From the moment the second lot is asked for, not from its first arrival: the worker
    # threads can hold that one back on a busy machine, which shortens the spread seen after it.
    assert arrivals[-1] - second >= 0.8 * paced


@pytest.mark.parametrize(("prepare", "gone"), [
    pytest.param(lambda server: None, True, id="namespace-missing"),
    pytest.param(lambda server: (server.add_namespace("leaving"), server.delete_object("namespaces", None, "leaving")),
                 True, id="namespace-terminating"),
    pytest.param(lambda server: (server.add_namespace("leaving"), server.fail_next(1, 500, verb="create")), False,
                 id="server-error"),
])
def test_a_write_into_a_namespace_that_is_gone_says_so(server, prepare, gone):
    """No retry can land in a namespace that is missing or being deleted: the error says so,
    and the provisioner then schedules no repair (the real API server's answers; see
    tests/e2e/test_fake_agrees.py)."""
    prepare(server)

    async def scenario(store, cache):
        with pytest.raises(SecretWriteError) as failed:
            await store.ensure(desired(namespace="leaving"))
        return failed.value

    error = run_with_store(server, scenario)
    assert isinstance(error, NamespaceGone) is gone
