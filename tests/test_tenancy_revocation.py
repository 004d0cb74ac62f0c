"""Tenancy over time, against the fake API server: when a namespace stops qualifying for a
registry (its labels change, the registry's ``namespaces`` list is narrowed, the selector is
edited), the refresher deletes that registry's managed Secret there, and nothing else.

The wiring is the production one: a namespace watch (NamespaceCache) feeds the refresher's
``namespace_labels``; the managed-Secret watch feeds the store; Secrets are first written by the
real Provisioner, as an admission would.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import Replica, credentials_secret, eventually, kube_client
from webhook import cluster
from webhook.provisioner import Provisioner
from webhook.settings import Settings

OWN = "regcred"
PROD = {"env": "prod"}
REGISTRIES = """
registries:
- {id: prod, url: harbor.example.com/prod, type: basic, secretRef: creds, namespaceSelector: {matchLabels: {env: prod}}}
- {id: teams, url: harbor.example.com/teams, type: basic, secretRef: creds, namespaces: ["team-*"]}
- {id: open, url: docker.io/acme, type: basic, secretRef: creds}
"""
GRANTED = {("team-a", "prod"), ("team-b", "prod"), ("team-a", "teams"), ("team-b", "teams"),
           ("team-a", "open"), ("team-b", "open")}


def tenant_on(server: FakeApiServer, **options) -> Replica:
    return Replica(server, REGISTRIES, own=OWN, namespaces=True, **options)


async def grant(tenant: Replica, pairs=GRANTED) -> None:
    for namespace, registry in sorted(pairs):
        await tenant.admit(namespace, registry=registry)


@pytest.fixture
def server():
    with FakeApiServer(namespaces=("default", OWN)) as fake:
        fake.add_namespace("team-a", PROD)
        fake.add_namespace("team-b", PROD)
        fake.add_namespace("sandbox", {"env": "dev"})
        fake.put_object("secrets", credentials_secret("creds", "robot", "pw"), OWN)
        yield fake


def held(server: FakeApiServer) -> set[tuple[str, str]]:
    """(namespace, registry id) of every managed pull Secret in the API."""
    return {(s["metadata"]["namespace"], s["metadata"]["name"].removeprefix("regcred-"))
            for s in server.objects("secrets") if s["metadata"]["name"].startswith("regcred-")}


def own_labels(tenant: Replica, namespace: str) -> dict[str, str] | None:
    """The cached labels less the one the API server sets on every namespace."""
    labels = tenant.namespaces.known_labels(namespace)
    return None if labels is None else {k: v for k, v in labels.items() if k != "kubernetes.io/metadata.name"}


def relabel(namespace: str, labels: dict[str, str]):
    """Change a namespace's labels in the API; wait until the namespace watch has seen it."""
    async def change(server: FakeApiServer, tenant: Replica) -> None:
        server.add_namespace(namespace, labels)
        await eventually(lambda: own_labels(tenant, namespace) == labels, what="the relabel")
    return change


def edit_list(old: str, new: str):
    async def change(server: FakeApiServer, tenant: Replica) -> None:
        assert tenant.config.apply_text(REGISTRIES.replace(old, new), "test")
    return change


CHANGES = [
    pytest.param(relabel("team-a", {"env": "dev"}), {}, {("team-a", "prod")}, id="label-changed"),
    pytest.param(relabel("team-a", {}), {}, {("team-a", "prod")}, id="labels-removed"),
    pytest.param(relabel("team-a", {"env": "prod", "tier": "1"}), {}, set(), id="label-added-still-matches"),
    pytest.param(edit_list('["team-*"]', '["team-a"]'), {}, {("team-b", "teams")}, id="list-narrowed"),
    pytest.param(edit_list("env: prod", "env: staging"), {}, {("team-a", "prod"), ("team-b", "prod")},
                 id="selector-edited"),
    pytest.param(relabel("team-b", {"env": "dev"}), {"prune": False}, {("team-b", "prod")},
                 id="prune-off-still-revokes"),
]


@pytest.mark.parametrize(("change", "options", "revoked"), CHANGES)
def test_a_namespace_that_stops_qualifying_loses_only_that_registry(server, change, options, revoked):
    async def main():
        tenant = await tenant_on(server, **options).start()
        await grant(tenant)
        assert (await tenant.refresher.run_once()).operations == {}  # everything qualifies at first
        await change(server, tenant)
        report = await tenant.refresher.run_once()
        metric = sum(tenant.metrics.registry.get_sample_value(
            "regcred_refresh_secret_writes_total", {"registry": r, "operation": "revoked"}) or 0 for r in
            ("prod", "teams", "open"))
        await tenant.stop()
        return report, metric

    report, metric = asyncio.run(main())
    assert report.operations == ({"revoked": len(revoked)} if revoked else {})
    assert metric == len(revoked)
    assert held(server) == GRANTED - revoked


def test_a_namespace_that_starts_qualifying_gets_nothing_until_a_pod_needs_it(server):
    async def main():
        tenant = await tenant_on(server).start()
        await grant(tenant)
        server.add_namespace("sandbox", PROD)
        await eventually(lambda: own_labels(tenant, "sandbox") == PROD)
        report = await tenant.refresher.run_once()
        await tenant.stop()
        return report

    assert (asyncio.run(main())).operations == {}
    assert not {pair for pair in held(server) if pair[0] == "sandbox"}


def test_an_unsynced_namespace_cache_revokes_nothing(server):
    """Without namespace labels a selector cannot be judged; deleting on a guess would wipe
    every selector-granted Secret at each start-up before the namespace watch synced."""
    async def main():
        tenant = await tenant_on(server).start(watch_namespaces=False)
        await grant(tenant)
        assert tenant.namespaces.known_labels("team-a") is None
        server.add_namespace("team-a", {"env": "dev"})
        report = await tenant.refresher.run_once()
        await tenant.stop()
        return report

    assert asyncio.run(main()).operations == {}
    assert held(server) == GRANTED


def test_a_label_change_wakes_the_refresher_in_cluster_mode(server):
    """cluster.build wires it all: with an hour between passes, only the namespace watch's wake
    can explain the Secret's removal within seconds."""
    server.put_object("configmaps", {"metadata": {"name": "regcred-registries"},
                                     "data": {"registries.yaml": REGISTRIES}}, OWN)
    settings = Settings(namespace=OWN, registries_configmap="regcred-registries", leader_elect=False,
                        refresh_interval_seconds=3600)

    async def main():
        running = cluster.build(settings, client=kube_client(server))
        await cluster.start(running)
        await eventually(lambda: running.deps.readiness.conditions["caches synced"] and running.deps.config.ready,
                         what="caches synced")
        admissions = Provisioner(running.deps.tokens, running.deps.store, running.deps.metrics)
        prod = running.deps.config.registries.by_id("prod")
        for namespace in ("team-a", "team-b"):
            [done] = await admissions.provision(namespace, [prod], dry_run=False)
            assert done.warning is None
        await eventually(lambda: running.deps.metrics.registry.get_sample_value(
            "regcred_refresh_runs_total", {"outcome": "ok"}), what="the first pass")  # the next is an hour away
        server.add_namespace("team-a", {"env": "dev"})
        await eventually(lambda: ("team-a", "prod") not in held(server), what="revocation after the relabel")
        await running.aclose()

    asyncio.run(main())
    assert held(server) == {("team-b", "prod")}
