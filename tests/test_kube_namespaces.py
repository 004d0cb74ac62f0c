"""NamespaceCache against the fake API server: the labels an admission's tenancy check reads.

A namespace created just before its first Pod is not in the watch-fed cache yet; the
admission must still learn its labels (from the API server), or say that it could not.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import kube_client
from webhook.kube.namespaces import NamespaceCache
from webhook.tenancy import NamespaceMissing, NamespaceUnknown


async def _synced_then_behind(server: FakeApiServer) -> tuple[NamespaceCache, object]:
    """A synced cache whose watch is held back (reconnecting), so new namespaces are not in it."""
    client = kube_client(server)
    cache = NamespaceCache(client, lookup_timeout=0.5)
    cache.start()
    await asyncio.wait_for(cache.synced.wait(), 5)
    server.hang_next(1, seconds=3, verb="watch", resource="namespaces")
    server.drop_watches()
    return cache, client


async def _stop(cache: NamespaceCache, client) -> None:
    await cache.stop()
    client.close()


def test_a_namespace_created_just_before_its_pod_has_its_labels():
    with FakeApiServer() as server:
        async def main():
            cache, client = await _synced_then_behind(server)
            server.add_namespace("fresh", {"env": "prod"})
            # Ten Pods of one Deployment in the new namespace share one read.
            answers = await asyncio.gather(*(cache.labels("fresh") for _ in range(10)))
            labels = {"env": "prod", "kubernetes.io/metadata.name": "fresh"}  # the API server adds the name
            assert answers == [labels] * 10
            assert server.count(verb="get", resource="namespaces", name="fresh") == 1
            assert await cache.labels("fresh") == labels  # now cached
            assert server.count(verb="get", resource="namespaces", name="fresh") == 1
            with pytest.raises(NamespaceMissing):  # only a forged review names one
                await cache.labels("never-created")
            await _stop(cache, client)

        asyncio.run(main())


@pytest.mark.parametrize("fault", [
    pytest.param(lambda server: server.forbid("get", "namespaces"), id="forbidden"),
    pytest.param(lambda server: server.fail_next(5, 503, "get", "namespaces"), id="unavailable"),
    pytest.param(lambda server: server.hang_next(5, 2.0, "get", "namespaces"), id="hung"),
])
def test_a_namespace_neither_cached_nor_readable_is_unknown(fault):
    with FakeApiServer() as server:
        async def main():
            cache, client = await _synced_then_behind(server)
            server.add_namespace("fresh", {"env": "prod"})
            fault(server)
            with pytest.raises(NamespaceUnknown, match="namespace fresh"):
                await asyncio.wait_for(cache.labels("fresh"), 1.5)  # bounded by lookup_timeout
            await _stop(cache, client)

        asyncio.run(main())


def test_once_the_read_budget_is_spent_the_watch_decides_without_a_read():
    """A flood of forged names spends the live reads' rate limit; then a name is waited for on
    the synced watch: a namespace really created is found, one never created is missing, and
    neither costs a read."""
    with FakeApiServer() as server:
        async def main():
            client = kube_client(server)
            cache = NamespaceCache(client, lookup_timeout=1.0, lookup_limit=(0.01, 1))
            cache.start()
            await asyncio.wait_for(cache.synced.wait(), 5)
            with pytest.raises(NamespaceMissing):
                await cache.labels("ghost-0")  # the one read the budget allows
            reads = server.count(verb="get", resource="namespaces")
            with pytest.raises(NamespaceMissing):
                await cache.labels("ghost-1")
            waiting = asyncio.ensure_future(cache.labels("late"))
            await asyncio.sleep(0.1)
            server.add_namespace("late", {"env": "prod"})
            labels = await waiting
            assert (reads, server.count(verb="get", resource="namespaces")) == (1, 1)
            await _stop(cache, client)
            return labels

        assert asyncio.run(main())["env"] == "prod"
