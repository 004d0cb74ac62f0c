"""Fault injection of the fake API server that the reliability tests lean on: a watch ended with
410 Expired (compaction), 429 with Retry-After for any verb, hangs that outlive the client."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.support.fakeapi import NS


@pytest.fixture
def core(server):
    """Without urllib3's own retries: these tests count every request the server answers."""
    return client.CoreV1Api(server.api_client(retries=0))


def read_stream(response) -> list[dict]:
    return [json.loads(line) for line in response.data.splitlines() if line.strip()]


def test_expire_watches_ends_open_watches_with_a_410_event(server, core):
    rv = server.resource_version
    lines: list[dict] = []

    def consume() -> None:
        response = core.list_namespaced_secret(NS, watch=True, resource_version=rv, _preload_content=False)
        lines.extend(read_stream(response))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    server.wait_for_watches(1)
    server.put_object("secrets", {"metadata": {"name": "before"}}, NS)
    assert server.expire_watches() == 1
    thread.join(5)
    assert not thread.is_alive() and server.watch_count() == 0
    assert [line["type"] for line in lines][-1] == "ERROR"
    assert (lines[-1]["object"]["code"], lines[-1]["object"]["reason"]) == (410, "Expired")


def test_after_expiry_an_older_resource_version_is_gone_but_a_relist_works(server, core):
    old = server.resource_version
    server.put_object("secrets", {"metadata": {"name": "s"}}, NS)
    server.expire_watches()
    response = core.list_namespaced_secret(NS, watch=True, resource_version=old, _preload_content=False,
                                           timeout_seconds=1)
    assert read_stream(response)[0]["object"]["code"] == 410
    listed = core.list_namespaced_secret(NS)
    assert [item.metadata.name for item in listed.items] == ["s"]
    # Watching from the relist's resourceVersion is valid again: nothing was missed.
    server.put_object("secrets", {"metadata": {"name": "t"}}, NS)
    response = core.list_namespaced_secret(NS, watch=True, resource_version=listed.metadata.resource_version,
                                           _preload_content=False, timeout_seconds=1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in read_stream(response)] == [("ADDED", "t")]


@pytest.mark.parametrize(("verb", "call"), [
    pytest.param("list", lambda core: core.list_namespaced_secret(NS), id="list"),
    pytest.param("create", lambda core: core.create_namespaced_secret(NS, {"metadata": {"name": "x"}}), id="create"),
    pytest.param("watch", lambda core: core.list_namespaced_secret(NS, watch=True, _preload_content=False), id="watch"),
])
def test_429_with_retry_after_for_any_verb(server, core, verb, call):
    server.fail_next(1, status=429, verb=verb, retry_after=2)
    with pytest.raises(ApiException) as raised:
        call(core)
    body = json.loads(raised.value.body)
    assert (raised.value.status, raised.value.headers["Retry-After"]) == (429, "2")
    assert (body["reason"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 2)
    assert server.count(verb=verb, status=429) == 1
