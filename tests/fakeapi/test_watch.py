"""The fake API server's watches, fault injection and timing, driven by the real client."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3
from kubernetes import client
from kubernetes.client import ApiException
from kubernetes.watch import Watch

from tests.fakes.apiserver import FakeApiServer
from tests.support.fakeapi import NS, secret, watch_events


def test_watch_sees_added_modified_deleted_in_order(server, core):
    rv = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, secret("s"))
    core.patch_namespaced_secret("s", NS, {"metadata": {"labels": {"a": "b"}}})
    core.delete_namespaced_secret("s", NS)
    server.put_object("configmaps", {"metadata": {"name": "not-a-secret"}}, NS)
    events = watch_events(core.list_namespaced_secret, NS, resource_version=rv, count=3)
    assert [kind for kind, _, _ in events] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [int(version) for _, _, version in events]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_watch_without_resource_version_starts_with_current_state(server, core):
    server.add_namespace("other")
    server.put_object("secrets", secret("a"), NS)
    server.put_object("secrets", secret("b"), "other")
    events = watch_events(core.list_secret_for_all_namespaces, count=2)
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_streams_live_writes_including_direct_store_writes(server, core):
    def writer():
        server.wait_for_watches(1)
        core.create_namespaced_secret(NS, secret("via-http"))
        server.put_object("secrets", secret("via-store"), NS)

    thread = threading.Thread(target=writer)
    thread.start()
    events = watch_events(core.list_namespaced_secret, NS, count=2, timeout_seconds=10)
    thread.join()
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "via-http"),
                                                          ("ADDED", "via-store")]


def test_selected_watch_sees_object_leaving_selection_as_deleted(server, core):
    rv = server.resource_version
    server.put_object("secrets", secret("s", {"managed": "yes"}), NS)
    server.put_object("secrets", secret("s", {"managed": "no"}), NS)
    events = watch_events(core.list_namespaced_secret, NS, resource_version=rv,
                          label_selector="managed=yes", count=2)
    assert [(kind, name) for kind, name, _ in events] == [("ADDED", "s"), ("DELETED", "s")]


def test_watch_from_compacted_resource_version_is_410_in_the_stream():
    with FakeApiServer(history_size=3) as server:
        core = client.CoreV1Api(server.api_client())
        rv = server.resource_version
        for i in range(5):
            server.put_object("secrets", secret(f"s{i}"), NS)
        raw = core.list_namespaced_secret(NS, watch=True, resource_version=rv,
                                          _preload_content=False)
        assert raw.status == 200
        event = json.loads(raw.data.splitlines()[0])
        assert (event["type"], event["object"]["code"]) == ("ERROR", 410)
        with pytest.raises(ApiException) as raised:
            list(Watch().stream(core.list_namespaced_secret, NS, resource_version=rv))
        assert raised.value.status == 410
        assert server.count(verb="watch") == 3  # the client retried once before giving up


def test_drop_watches_ends_open_streams(server, core):
    finished = threading.Event()

    def consume():
        list(Watch().stream(core.list_namespaced_secret, NS, timeout_seconds=30))
        finished.set()

    threading.Thread(target=consume, daemon=True).start()
    server.wait_for_watches(1)
    assert server.drop_watches() == 1
    assert finished.wait(5)
    assert server.watch_count() == 0


def test_watch_client_resumes_after_drop_without_replaying(server, core):
    seen: list[str] = []

    def consume():
        watch = Watch()
        for event in watch.stream(core.list_namespaced_secret, NS):
            seen.append(event["raw_object"]["metadata"]["name"])
            if len(seen) == 2:
                watch.stop()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    server.wait_for_watches(1)
    server.put_object("secrets", secret("first"), NS)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    server.drop_watches()
    server.wait_for_watches(1)  # the client reconnected from the last resourceVersion it saw
    server.put_object("secrets", secret("second"), NS)
    thread.join(5)
    assert seen == ["first", "second"]
    assert server.count(verb="watch") == 2


def test_watch_timeout_seconds_is_honoured(core):
    started = time.monotonic()
    assert watch_events(core.list_namespaced_secret, NS, count=1, timeout_seconds=1) == []
    assert 0.9 <= time.monotonic() - started < 5


def test_watch_bookmarks_carry_the_current_resource_version():
    with FakeApiServer(bookmark_interval=0.05) as server:
        core = client.CoreV1Api(server.api_client())
        rv = server.resource_version
        events = watch_events(core.list_namespaced_secret, NS, resource_version=rv,
                              allow_watch_bookmarks=True, count=1, timeout_seconds=5)
        assert events == [("BOOKMARK", None, rv)]


def test_fail_next_matches_verb_and_resource_then_recovers(server, core):
    server.fail_next(1, status=503, verb="list", resource="secrets")
    core.read_namespace(NS)
    core.list_namespaced_config_map(NS)
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_secret(NS)
    assert (raised.value.status, json.loads(raised.value.body)["reason"]) == (
        503, "ServiceUnavailable")
    core.list_namespaced_secret(NS)


def test_retry_after_is_sent_and_honoured_by_the_client(server, core):
    server.fail_next(1, status=429, retry_after=7)
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret(NS, secret("s"))  # POST: urllib3 never retries it
    assert raised.value.status == 429
    assert raised.value.headers["Retry-After"] == "7"
    assert json.loads(raised.value.body)["details"]["retryAfterSeconds"] == 7

    # urllib3's default Retry transparently retries an idempotent 429 with Retry-After...
    server.put_object("secrets", secret("s"), NS)
    server.reset_log()
    server.fail_next(1, status=429, retry_after=0)
    core.read_namespaced_secret("s", NS)
    assert [r.status for r in server.requests] == [429, 200]
    # ...and client_go_retries moves that loop into the kubernetes client.
    retrying = client.CoreV1Api(server.api_client(client_go_retries=True))
    server.reset_log()
    server.fail_next(2, status=429, verb="get", retry_after=0)
    assert retrying.read_namespaced_secret("s", NS).metadata.name == "s"
    assert [r.status for r in server.requests] == [429, 429, 200]


def test_hang_next_times_out_the_client_but_the_write_lands(server, core):
    server.hang_next(1, seconds=0.6, verb="create")
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.create_namespaced_secret(NS, secret("late"), _request_timeout=0.2)
    deadline = time.monotonic() + 5
    while server.get_object("secrets", NS, "late") is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.get_object("secrets", NS, "late") is not None


def test_latency_is_added_to_every_request(server, core):
    server.latency = 0.05
    started = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - started >= 0.05
    assert server.requests[-1].duration >= 0.05


def test_request_log_counts_verbs_and_resources(server, core):
    core.create_namespaced_secret(NS, secret("s"))
    server.reset_log()
    core.read_namespaced_secret("s", NS)
    core.list_namespaced_secret(NS)
    core.list_secret_for_all_namespaces()
    core.patch_namespaced_secret("s", NS, {"metadata": {"labels": {"a": "b"}}})
    assert server.count() == 4
    assert server.count(verb="list", resource="secrets") == 2
    assert server.count(verb="list", namespace=NS) == 1
    assert server.count(verb="patch", name="s", status=200) == 1
    record = server.requests[0]
    assert (record.verb, record.resource, record.namespace, record.name, record.status) == (
        "get", "secrets", NS, "s", 200)
    server.reset_log()
    assert server.count() == 0 and server.requests == []
