"""The refresher against the fake API server: rotation, re-mint, url change, prune, leadership.

Each ``Replica`` (tests/support/kube.py) is one regcred instance wired as cluster mode wires
it: a KubeClient, the credentials watch feeding the token cache, the managed-Secret watch
feeding the store, the real Provisioner for admissions, and a Refresher. Passes are driven
with ``run_once`` except where the background loop and leader election themselves are under
test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import FakeMaterial
from tests.support.kube import Replica, auths, credentials_secret, eventually
from webhook.activeregistries import ActiveRegistries
from webhook.credentialcache import CredentialCache
from webhook.kube.leader import LeaderElector, LeaseTimings
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable
from webhook.providers.basic import BasicProvider
from webhook.pullsecrets import build_pull_secret
from webhook.refresher import Refresher
from webhook.registries import Registry

OWN = "regcred"
TEAMS = ("team-a", "team-b", "team-c")
REGISTRIES = """
registries:
- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}
- {id: harbor, url: harbor.example.com/platform, type: basic, secretRef: harbor-creds}
"""


class MintingProvider:
    """A short-lived token per mint, stamped by the test's clock: token-1, token-2, ... per registry."""

    def __init__(self, clock):
        self.clock = clock
        self.mints = Counter()

    def mint(self, registry, material):
        self.mints[registry.id] += 1
        expires = datetime.fromtimestamp(self.clock() + 3600, UTC)
        return Credential("oauth2", f"token-{self.mints[registry.id]}", expires)


def replica_on(server: FakeApiServer, **options) -> Replica:
    return Replica(server, REGISTRIES, own=OWN, **options)


@pytest.fixture
def server():
    with FakeApiServer(namespaces=("default", OWN, *TEAMS)) as fake:
        fake.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-1"), OWN)
        fake.put_object("secrets", credentials_secret("harbor-creds", "bot", "h-1"), OWN)
        yield fake


def password(server: FakeApiServer, namespace: str, registry: str = "hub") -> str:
    secret = server.get_object("secrets", namespace, f"regcred-{registry}")
    return next(iter(auths(secret).values()))["password"]


def test_credential_rotation_reaches_every_namespace(server):
    async def main():
        replica = await replica_on(server).start()
        await replica.admit(*TEAMS)
        await replica.admit("team-a", registry="harbor")
        assert (await replica.refresher.run_once()).operations == {}  # all fresh already
        server.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-2"), OWN)
        await eventually(lambda: replica.material.read("hub-creds")["password"] == b"pw-2")
        server.reset_log()
        taken = replica.limiter.taken
        report = await replica.refresher.run_once()
        assert report.operations == {"updated": 3} and report.ok
        assert replica.limiter.taken - taken == server.count()  # every request paid the rate limit
        assert replica.writes("updated") == 3 and replica.runs("ok") == 2
        await replica.stop()

    asyncio.run(main())
    assert [password(server, team) for team in TEAMS] == ["pw-2"] * 3
    assert password(server, "team-a", "harbor") == "h-1"


def test_credentials_are_reminted_after_two_thirds_of_their_life(server):
    now = [1_900_000_000.0]
    provider = MintingProvider(lambda: now[0])

    async def main():
        replica = await replica_on(server, providers={"basic": provider}, clock=lambda: now[0]).start()
        await replica.admit("team-a", "team-b")
        now[0] += 2000  # 56% of an hour: not yet
        assert (await replica.refresher.run_once()).minting == []
        now[0] += 500  # 69%: the token cache starts a refresh-ahead mint
        report = await replica.refresher.run_once()
        assert report.minting == ["hub"] and report.operations == {}
        await eventually(lambda: provider.mints["hub"] == 2 and not replica.tokens.due_for_refresh(
            replica.config.registries.by_id("hub")), what="the new token")
        assert (await replica.refresher.run_once()).operations == {"updated": 2}
        await replica.stop()

    asyncio.run(main())
    assert password(server, "team-a") == password(server, "team-b") == "token-2"


def test_a_changed_url_rewrites_the_secrets(server):
    async def main():
        replica = await replica_on(server).start()
        await replica.admit("team-a", "team-b")
        assert replica.config.apply_text(REGISTRIES.replace("docker.io/acme", "docker.io/acme-corp"), "test")
        assert (await replica.refresher.run_once()).operations == {"updated": 2}
        await replica.stop()

    asyncio.run(main())
    assert list(auths(server.get_object("secrets", "team-b", "regcred-hub"))) == ["docker.io/acme-corp"]


PRUNE = [
    pytest.param(True, "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}\n",
                 {"deleted": 2}, id="removed-registry-pruned"),
    pytest.param(False, "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}\n",
                 {}, id="prune-off-keeps"),
    pytest.param(True, "registries: []\n", {"deleted": 4}, id="empty-list-prunes-all"),
    pytest.param(True, None, {}, id="no-valid-list-prunes-nothing"),
]


@pytest.mark.parametrize(("prune", "new_list", "operations"), PRUNE)
def test_prune_deletes_only_managed_secrets_of_removed_registries(server, prune, new_list, operations):
    foreign = {"metadata": {"name": "regcred-harbor", "labels": {"team": "c"}}, "data": {"k": "dg=="}}
    server.put_object("secrets", foreign, "team-c")

    async def main():
        replica = await replica_on(server, prune=prune).start()
        await replica.admit("team-a", "team-b")
        await replica.admit("team-a", "team-b", registry="harbor")
        if new_list is None:
            replica.config.registries = None  # as before any valid list was ever applied
        else:
            assert replica.config.apply_text(new_list, "test")
        report = await replica.refresher.run_once()
        assert report.operations == operations
        assert report.skipped == (None if new_list is not None else "no registry list")
        await replica.stop()

    asyncio.run(main())
    remaining = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in server.objects("secrets")
                 if s["metadata"]["name"].startswith("regcred-")}
    assert ("team-c", "regcred-harbor") in remaining  # foreign: never touched
    assert len(remaining) == 5 - operations.get("deleted", 0)


def test_a_failed_write_is_reported_and_repaired_on_the_next_pass(server):
    async def main():
        replica = await replica_on(server).start()
        await replica.admit("team-a")
        server.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-2"), OWN)
        await eventually(lambda: replica.material.read("hub-creds")["password"] == b"pw-2")
        rule = server.forbid(verb="update", resource="secrets")
        report = await replica.refresher.run_once()
        assert report.operations == {"failed": 1} and not report.ok and replica.runs("errors") == 1
        server.allow(rule)
        assert (await replica.refresher.run_once()).operations == {"updated": 1}
        await replica.stop()

    asyncio.run(main())
    assert password(server, "team-a") == "pw-2"


def test_a_follower_does_nothing(server):
    async def main():
        replica = await replica_on(server, is_leader=lambda: False).start()
        await replica.admit("team-a")
        server.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-2"), OWN)
        await eventually(lambda: replica.material.read("hub-creds")["password"] == b"pw-2")
        server.reset_log()
        assert (await replica.refresher.run_once()).skipped == "not leader"
        assert server.count() == 0 and replica.runs("skipped") == 1
        await replica.stop()

    asyncio.run(main())
    assert password(server, "team-a") == "pw-1"


def test_two_replicas_only_the_leader_refreshes_and_the_follower_takes_over(server):
    timing = LeaseTimings(lease_duration=1.0, renew_deadline=0.5, retry_period=0.2)

    async def main():
        stop = {name: asyncio.Event() for name in "ab"}
        replicas, tasks = {}, {}
        for name in "ab":
            elector_box: list[LeaderElector] = []
            replica = replica_on(server, is_leader=lambda box=elector_box: box[0].is_leader, interval=0.2)
            elector = LeaderElector(replica.client, namespace=OWN, identity=name, metrics=replica.metrics,
                                    on_change=lambda leading, r=replica: leading and r.refresher.wake(), timings=timing)
            elector_box.append(elector)
            replicas[name] = await replica.start()
            tasks[name] = [asyncio.create_task(elector.run(stop[name])),
                           asyncio.create_task(replica.refresher.run(stop[name]))]
        await replicas["a"].admit(*TEAMS)
        await eventually(lambda: any(r.metrics.registry.get_sample_value("regcred_leader") for r in replicas.values()))
        leader = next(n for n, r in replicas.items() if r.metrics.registry.get_sample_value("regcred_leader"))
        follower = "b" if leader == "a" else "a"

        server.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-2"), OWN)
        # Polled on the leader's metric: the server holds a write before its response is back.
        await eventually(lambda: replicas[leader].writes("updated") == 3, what="rotation by the leader")
        assert [password(server, t) for t in TEAMS] == ["pw-2"] * 3
        assert replicas[follower].writes("updated") == 0 and replicas[follower].runs("skipped") > 0

        for task in tasks[leader]:  # the leader's Pod is killed: no release, no more renewals
            task.cancel()
        await asyncio.gather(*tasks[leader], return_exceptions=True)
        server.put_object("secrets", credentials_secret("hub-creds", "robot", "pw-3"), OWN)
        await eventually(lambda: replicas[follower].writes("updated") == 3, timeout=8,
                         what="rotation by the new leader")
        assert [password(server, t) for t in TEAMS] == ["pw-3"] * 3
        stop[follower].set()
        await asyncio.gather(*tasks[follower])
        for replica in replicas.values():
            await replica.stop()

    asyncio.run(main())


@pytest.mark.parametrize(("harbor_creds", "minted"), [
    pytest.param(True, {"hub": 1, "harbor": 1}, id="minted-before-any-pod-needs-it"),
    pytest.param(False, {"hub": 1}, id="unavailable-and-unused-is-no-error"),
])
def test_a_pass_mints_every_listed_registry_ahead_of_the_first_pod(server, harbor_creds, minted):
    now = [1_900_000_000.0]
    if not harbor_creds:
        server.delete_object("secrets", OWN, "harbor-creds")

    class NeedsMaterial(MintingProvider):
        def mint(self, registry, material):
            if not material:
                raise CredentialUnavailable(f"{registry.id}: credentials Secret missing")
            return super().mint(registry, material)

    provider = NeedsMaterial(lambda: now[0])

    async def main():
        replica = await replica_on(server, providers={"basic": provider}, clock=lambda: now[0]).start()
        report = await replica.refresher.run_once()  # no Pod yet, so no pull Secret at all
        await replica.stop()
        return report

    report = asyncio.run(main())
    assert report.checked == 0 and report.ok and report.unavailable == []
    assert dict(provider.mints) == minted


def test_a_long_pass_gives_way_to_admissions(server):
    """A pass over thousands of current Secrets awaits nothing per Secret; it must still let
    the event loop serve admissions meanwhile."""
    registry = Registry.model_validate({"id": "hub", "url": "docker.io/acme", "type": "basic", "secretRef": "c"})
    credential = Credential("robot", "pw", None)
    secrets = [build_pull_secret(registry, credential, f"ns-{i}") for i in range(3000)]

    class CurrentSecrets:  # our ManagedSecretStore Protocol, every Secret already current
        def managed(self):
            return secrets

        async def ensure(self, desired, *, dry_run=False):
            raise AssertionError("nothing to write")

        async def delete(self, namespace, name):
            raise AssertionError("nothing to delete")

    async def main():
        metrics = Metrics()
        config = ActiveRegistries(metrics)
        assert config.apply_text("registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: c}\n", "t")
        material = FakeMaterial({"c": {"username": b"robot", "password": b"pw"}})
        tokens = CredentialCache({"basic": BasicProvider()}, material, metrics)
        refresher = Refresher(registries=lambda: config.registries, tokens=tokens, store=CurrentSecrets(),
                              metrics=metrics)
        await refresher.run_once()  # mints; the second pass is the one without any I/O
        ticks = 0

        async def admissions():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(admissions())
        await asyncio.sleep(0)
        before = ticks
        report = await refresher.run_once()
        other.cancel()
        return report, ticks - before

    report, ticks = asyncio.run(main())
    assert report.checked == 3000 and report.operations == {}
    assert ticks >= 3000 // 256  # the other task ran at least once per slice of the pass
