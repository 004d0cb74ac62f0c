"""The list+watch cache against the fake API server: sync, events, recovery, stop.

Recovery is checked by its result: whatever happened while the stream was down (changes,
deletions, a compacted history), the cache ends equal to the server and listeners heard it.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import eventually, kube_client
from webhook.kube.caches import Shared
from webhook.kube.informer import Informer

NS = "default"
FAST = {"backoff": (0.05, 0.2)}
CLIENTS: dict[Informer, object] = {}


def configmap(name: str, value: str = "1", **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": value}}


def cached(informer: Informer) -> dict[str, str]:
    return {obj["metadata"]["name"]: obj["data"]["v"] for obj in informer.values()}


def on_server(server: FakeApiServer, **labels: str) -> dict[str, str]:
    return {obj["metadata"]["name"]: obj["data"]["v"] for obj in server.objects("configmaps", NS)
            if all(obj["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())}


async def started(server: FakeApiServer, **options) -> tuple[Informer, list]:
    client = kube_client(server)
    informer = Informer(client, client.core.list_namespaced_config_map, NS, **{**FAST, **options})
    CLIENTS[informer] = client
    events: list[tuple[str, str]] = []
    informer.subscribe(lambda kind, new, old: events.append((kind, (new or old)["metadata"]["name"])))
    informer.start()
    await asyncio.wait_for(informer.synced.wait(), 5)
    return informer, events


async def stopped(informer: Informer) -> None:
    await informer.stop()
    CLIENTS.pop(informer).close()


def test_lists_then_follows_the_watch():
    with FakeApiServer() as server:
        server.put_object("configmaps", configmap("a"), NS)

        async def main():
            informer, events = await started(server)
            assert cached(informer) == {"a": "1"} and events == [("ADDED", "a")]
            server.put_object("configmaps", configmap("b"), NS)
            server.put_object("configmaps", configmap("a", "2"), NS)
            server.delete_object("configmaps", NS, "b")
            await eventually(lambda: len(events) == 4, what="watch events")
            assert events[1:] == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
            assert cached(informer) == {"a": "2"} and informer.relists == 1
            await stopped(informer)

        asyncio.run(main())


def test_pages_through_a_large_list():
    with FakeApiServer() as server:
        for i in range(7):
            server.put_object("configmaps", configmap(f"c{i}"), NS)

        async def main():
            informer, _ = await started(server, page_size=3)
            assert len(informer.values()) == 7
            await stopped(informer)

        asyncio.run(main())
        assert server.count(verb="list", resource="configmaps") == 3


def test_label_selector_keeps_only_matching_objects():
    with FakeApiServer() as server:
        server.put_object("configmaps", configmap("mine", owner="regcred"), NS)
        server.put_object("configmaps", configmap("other"), NS)

        async def main():
            informer, events = await started(server, label_selector="owner=regcred")
            assert cached(informer) == {"mine": "1"}
            server.put_object("configmaps", configmap("mine"), NS)  # the label removed: it leaves
            await eventually(lambda: cached(informer) == {}, what="object leaving the selection")
            assert events[-1] == ("DELETED", "mine")
            await stopped(informer)

        asyncio.run(main())


@pytest.mark.parametrize(("history", "relists"), [
    pytest.param(1000, 1, id="dropped-stream-resumes-from-last-version"),
    pytest.param(3, 2, id="compacted-history-410-relists"),
])
def test_recovers_everything_missed_while_disconnected(history, relists):
    with FakeApiServer(history_size=history) as server:
        for name in ("keep", "change", "remove"):
            server.put_object("configmaps", configmap(name), NS)

        async def main():
            informer, events = await started(server)
            # The reconnect is held back while the world moves on, like an apiserver restart.
            server.hang_next(1, seconds=0.5, verb="watch")
            server.drop_watches()
            server.put_object("configmaps", configmap("change", "2"), NS)
            server.delete_object("configmaps", NS, "remove")
            for i in range(5):
                server.put_object("configmaps", configmap(f"new{i}"), NS)
            await eventually(lambda: cached(informer) == on_server(server), what="cache to catch up")
            assert informer.relists == relists
            assert ("DELETED", "remove") in events and ("MODIFIED", "change") in events
            await stopped(informer)

        asyncio.run(main())


def test_a_relist_keeps_the_cached_object_of_anything_unchanged():
    with FakeApiServer(history_size=3) as server:
        for name in ("keep", "change"):
            server.put_object("configmaps", configmap(name), NS)

        async def main():
            informer, _ = await started(server)
            kept, changed = informer.get(NS, "keep"), informer.get(NS, "change")
            server.hang_next(1, seconds=0.5, verb="watch")
            server.drop_watches()
            for i in range(5):  # more than the history holds: the resumed watch gets 410 and relists
                server.put_object("configmaps", configmap("change", str(i)), NS)
            await eventually(lambda: informer.relists == 2 and cached(informer) == on_server(server))
            assert informer.get(NS, "keep") is kept
            assert informer.get(NS, "change") is not changed and informer.get(NS, "change")["data"]["v"] == "4"
            await stopped(informer)

        asyncio.run(main())


@pytest.mark.parametrize("fault", [
    pytest.param(lambda s: s.fail_next(2, status=500, verb="list"), id="list-500"),
    pytest.param(lambda s: s.fail_next(1, status=403, verb="watch"), id="watch-403"),
])
def test_errors_back_off_and_recover(fault):
    with FakeApiServer() as server:
        server.put_object("configmaps", configmap("a"), NS)
        fault(server)

        async def main():
            informer, _ = await started(server)
            server.put_object("configmaps", configmap("b"), NS)
            await eventually(lambda: cached(informer) == {"a": "1", "b": "1"}, what="recovery")
            await stopped(informer)

        asyncio.run(main())


def test_stop_ends_the_open_watch_promptly():
    with FakeApiServer() as server:
        async def main():
            informer, _ = await started(server)
            await asyncio.to_thread(server.wait_for_watches, 1)
            await asyncio.wait_for(stopped(informer), 2)

        asyncio.run(main())

        async def closed():
            await eventually(lambda: server.watch_count() == 0, what="the server to see the watch closed")

        asyncio.run(closed())


def test_a_broken_listener_does_not_stop_the_cache():
    with FakeApiServer() as server:
        async def main():
            informer, events = await started(server)
            informer.subscribe(lambda *_: 1 / 0)
            server.put_object("configmaps", configmap("a"), NS)
            await eventually(lambda: events == [("ADDED", "a")])
            server.put_object("configmaps", configmap("b"), NS)
            await eventually(lambda: cached(informer) == {"a": "1", "b": "1"})
            await stopped(informer)

        asyncio.run(main())


@pytest.mark.parametrize(("first", "second", "shared"), [
    pytest.param("x" * 300, "".join(["x"] * 300), True, id="equal-strings"),
    pytest.param({"a": "1", "b": "2"}, {"a": "1", "b": "2"}, True, id="equal-flat-string-dicts"),
    pytest.param({"a": "1"}, {"a": "2"}, False, id="different-dicts"),
    pytest.param({"a": {"b": "1"}}, {"a": {"b": "1"}}, False, id="nested-dicts-left-alone"),
    pytest.param([1], [1], False, id="lists-left-alone"),
])
def test_shared_hands_back_one_object_per_distinct_value(first, second, shared):
    share = Shared()
    assert share(first) is first
    assert share(second) == second
    assert (share(second) is first) is shared


def test_shared_starts_over_past_its_limit():
    share = Shared(limit=2)
    kept = [share(f"value-{i}") for i in range(2)]
    late = "".join(["value-", "0"])
    assert share(late) is late  # the table was full and started over
    assert share("".join(["value-", "0"])) is late and kept[0] == late


def _late_copy_after_watched_delete(server: FakeApiServer, informer: Informer, events: list):
    """ADDED rv n, DELETED rv n+1 through the watch; the copy at rv n is what arrives late."""
    copy = server.put_object("configmaps", configmap("gone"), NS)
    server.delete_object("configmaps", NS, "gone")
    return copy, lambda: ("DELETED", "gone") in events


def _late_copy_after_listed_delete(server: FakeApiServer, informer: Informer, events: list):
    """Deleted before the informer's list (a relist): only the list says it is gone."""
    copy = server.get_object("configmaps", NS, "before")
    server.delete_object("configmaps", NS, "before")
    server.expire_watches()
    return copy, lambda: informer.relists == 2


@pytest.mark.parametrize("history", [
    pytest.param(_late_copy_after_watched_delete, id="deleted-through-the-watch"),
    pytest.param(_late_copy_after_listed_delete, id="deleted-before-the-list"),
])
def test_a_late_copy_of_a_deleted_object_does_not_come_back(history):
    # A response to our own read or write reaches observe() from a worker thread, possibly after
    # the watch has already delivered the object's deletion.
    with FakeApiServer() as server:
        server.put_object("configmaps", configmap("before"), NS)

        async def main():
            informer, events = await started(server)
            copy, delivered = history(server, informer, events)
            await eventually(delivered, what="the deletion to be watched")
            informer.observe(copy)
            assert informer.get(NS, copy["metadata"]["name"]) is None
            await stopped(informer)

        asyncio.run(main())


def test_our_own_write_ahead_of_the_watch_is_cached_at_once():
    with FakeApiServer() as server:
        async def main():
            informer, _ = await started(server)
            server.hang_next(1, seconds=0.5, verb="watch")  # the watch is behind, reconnecting
            server.drop_watches()
            written = server.put_object("configmaps", configmap("mine", "2"), NS)
            informer.observe(written)
            assert cached(informer) == {"mine": "2"}
            await eventually(lambda: server.watch_count() == 1, what="the watch to resume")
            await stopped(informer)

        asyncio.run(main())


def test_the_declared_urllib3_has_what_stop_relies_on():
    # stop() unblocks the watch thread's read with HTTPResponse.shutdown, new in urllib3 2.3: an
    # older one, which the kubernetes client accepts, would raise AttributeError out of stop().
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    declared = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == "urllib3"]
    assert declared and not any(requirement.specifier.contains("2.2.3") for requirement in declared)
