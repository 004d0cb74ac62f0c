"""One watch per name (webhook/kube/named.py) against the fake API server: only the named
objects are cached, watches follow the names, a retired name's watch stays until it is empty,
and a refused watch is reported once and does not hold back the rest."""

from __future__ import annotations

import asyncio

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import OWN, Instance, eventually, kube_client, seed_cluster
from webhook.kube.informer import Informer
from webhook.kube.named import NamedInformers

NS = "default"


def configmap(name: str, value: str = "1") -> dict:
    return {"metadata": {"name": name}, "data": {"v": value}}


def named(client, reported: list) -> NamedInformers:
    def make(name: str, **options) -> Informer:
        return Informer(client, client.core.list_namespaced_config_map, NS, field_selector=f"metadata.name={name}",
                        backoff=(0.05, 0.2), name=name, **options)
    return NamedInformers(make, on_forbidden=lambda name, missing: reported.append((name, str(missing))))


def cached(informers: NamedInformers) -> dict[str, str]:
    return {obj["metadata"]["name"]: obj["data"]["v"] for obj in informers.values()}


def test_only_the_named_objects_are_cached_and_the_watches_follow_the_names():
    with FakeApiServer() as server:
        for name in ("a", "b", "other"):
            server.put_object("configmaps", configmap(name), NS)

        async def main():
            client = kube_client(server)
            informers = named(client, [])
            informers.start()
            await asyncio.sleep(0.05)
            assert not informers.synced.is_set()  # no names yet: nothing known to be complete
            informers.set_names({"a", "missing"})
            await asyncio.wait_for(informers.synced.wait(), 5)
            assert cached(informers) == {"a": "1"} and informers.get(NS, "other") is None
            informers.set_names({"a", "b"})
            await eventually(lambda: cached(informers) == {"a": "1", "b": "1"}, what="b watched")
            assert informers.names() == {"a", "b"}  # "missing" held nothing: retired at once
            informers.set_names({"b"})
            assert informers.names() == {"a", "b"}  # "a" still holds an object: kept for the prune
            server.delete_object("configmaps", NS, "a")
            await eventually(lambda: informers.names() == {"b"}, what="a retired once empty")
            server.put_object("configmaps", configmap("b", "2"), NS)
            await eventually(lambda: cached(informers) == {"b": "2"}, what="b followed")
            await informers.stop()
            client.close()

        asyncio.run(main())


def test_a_refused_watch_is_reported_once_and_the_others_sync():
    with FakeApiServer() as server:
        server.put_object("configmaps", configmap("a"), NS)
        denied = server.forbid(verb="list", resource="configmaps")

        async def main():
            client = kube_client(server)
            reported: list = []
            informers = named(client, reported)
            informers.start()
            informers.set_names({"a"})
            await asyncio.wait_for(informers.synced.wait(), 5)  # refused counts as synced
            await asyncio.sleep(0.5)  # several retries with backoff
            assert [name for name, _ in reported] == ["a"]
            assert "list configmaps" in reported[0][1] and set(informers.forbidden()) == {"a"}
            server.allow(denied)
            await eventually(lambda: cached(informers) == {"a": "1"}, what="healed once allowed")
            assert informers.forbidden() == {}
            await informers.stop()
            client.close()

        asyncio.run(main())


def test_readiness_waits_for_the_credentials_secrets_the_registry_list_names():
    """The credentials watches start once the registry list names them. They used to count as
    synced before that (no names wanted yet), so /readyz could turn green while the credentials
    Secret was still being listed, and a Pod admitted then got "credentials unavailable" (seen
    as a 1-in-12 failure of test_api_faults). The list of the credentials Secret is held back
    here for 1.5 s: readiness must wait for it."""
    with FakeApiServer() as server:
        seed_cluster(server, ["team-a"])
        server.hang_next(1, seconds=1.5, verb="list", resource="secrets", namespace=OWN)

        async def main() -> dict:
            regcred = await Instance(server, identity="solo").start()  # returns once ready
            try:
                status, response = await regcred.admit("team-a")
                assert status == 200
                return response
            finally:
                await regcred.stop()

        response = asyncio.run(main())
    assert response["allowed"] and not response.get("warnings") and "patch" in response, response
