"""Tests of the fake Kubernetes API server (``tests/fakes/apiserver.py``).

Every test drives the real ``kubernetes`` client over HTTPS, so what passes here is what
regcred's own tests can rely on. The expected bodies, codes and event orders are those of a
real kube-apiserver; where the fake reproduces a quirk, the test names the quirk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import kubernetes
import pytest
import urllib3
from kubernetes import client
from kubernetes.client import ApiException
from kubernetes.watch import Watch

from tests.fakes.apiserver import FakeApiServer
from tests.fakes.apiserver_errors import ApiError

NS = "default"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, labels: dict | None = None, **fields: object) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, **fields}


def names(items: list) -> list[str]:
    return [item.metadata.name for item in items]


def watch_events(func, *args, count: int, **kwargs) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first ``count`` events of a real client watch."""
    watch, events = Watch(), []
    for event in watch.stream(func, *args, **kwargs):
        meta = event["raw_object"]["metadata"]
        events.append((event["type"], meta.get("name"), meta["resourceVersion"]))
        if len(events) == count:
            watch.stop()
    return events


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def api(server):
    return server.api_client()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


def test_secret_create_get_list_replace_patch_delete(server, core):
    created = core.create_namespaced_secret(NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name="pull", labels={"app": "regcred"}),
        type="kubernetes.io/dockerconfigjson", data={".dockerconfigjson": b64("{}")}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.resource_version == server.resource_version
    fetched = core.read_namespaced_secret("pull", NS)
    assert fetched.data == {".dockerconfigjson": b64("{}")}
    assert names(core.list_namespaced_secret(NS).items) == ["pull"]

    fetched.data = {".dockerconfigjson": b64('{"auths": {}}')}
    replaced = core.replace_namespaced_secret("pull", NS, fetched)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    patched = core.patch_namespaced_secret("pull", NS, {"metadata": {"labels": {"tier": "x"}}})
    assert patched.metadata.labels == {"app": "regcred", "tier": "x"}

    core.delete_namespaced_secret("pull", NS)
    assert server.get_object("secrets", NS, "pull") is None
    assert server.requests[-1].status == 200


def test_list_items_have_no_kind_but_get_and_list_do(core):
    # A real apiserver quirk: items inside a list carry no kind/apiVersion.
    core.create_namespaced_secret(NS, secret("s"))
    listed = json.loads(core.list_namespaced_secret(NS, _preload_content=False).data)
    got = json.loads(core.read_namespaced_secret("s", NS, _preload_content=False).data)
    assert (listed["kind"], listed["apiVersion"]) == ("SecretList", "v1")
    assert "kind" not in listed["items"][0]
    assert (got["kind"], got["apiVersion"]) == ("Secret", "v1")


def test_string_data_is_merged_into_data_and_never_returned(core):
    created = core.create_namespaced_secret(NS, secret(
        "s", data={"a": b64("old"), "b": b64("keep")}, stringData={"a": "new"}))
    assert created.data == {"a": b64("new"), "b": b64("keep")}
    assert created.string_data is None
    assert core.read_namespaced_secret("s", NS).type == "Opaque"


def test_update_without_changes_keeps_resource_version(server, core):
    created = core.create_namespaced_secret(NS, secret("s", data={"k": b64("v")}))
    again = core.replace_namespaced_secret("s", NS, created)
    assert again.metadata.resource_version == created.metadata.resource_version
    assert server.resource_version == created.metadata.resource_version


def test_configmap_merge_json_and_strategic_patches(core):
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cfg", NS, {"data": {"b": "2"}},
                                     _content_type="application/merge-patch+json")
    core.patch_namespaced_config_map("cfg", NS, [{"op": "remove", "path": "/data/a"}])
    patched = core.patch_namespaced_config_map("cfg", NS, {"data": {"c": "3"}})
    assert patched.data == {"b": "2", "c": "3"}
    patched.data = {"only": "x"}
    assert core.replace_namespaced_config_map("cfg", NS, patched).data == {"only": "x"}
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_config_map("cfg", NS, [{"op": "test", "path": "/data/only",
                                                      "value": "y"}])
    assert failed.value.status == 422


def test_namespace_lifecycle_deletes_its_contents(server, core):
    created = core.create_namespace({"metadata": {"name": "team-a", "labels": {"t": "a"}}})
    assert created.metadata.labels == {"t": "a", "kubernetes.io/metadata.name": "team-a"}
    assert created.status.phase == "Active"
    core.create_namespaced_secret("team-a", secret("s"))
    deleted = core.delete_namespace("team-a")
    # The real DELETE answers the Namespace itself, Terminating, not a Status.
    assert deleted["status"]["phase"] == "Terminating"
    assert server.objects("secrets", "team-a") == []
    assert "team-a" not in names(core.list_namespace().items)


def test_lease_semantics_for_leader_election(server, api):
    leases = client.CoordinationV1Api(api)
    now = datetime.now(timezone.utc)
    spec = client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15,
                              acquire_time=now, renew_time=now)
    lease = leases.create_namespaced_lease(NS, client.V1Lease(
        metadata=client.V1ObjectMeta(name="regcred"), spec=spec))
    assert lease.spec.renew_time == now  # MicroTime keeps microseconds
    lease.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("regcred", NS, lease)
    assert renewed.spec.holder_identity == "b"
    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("regcred", NS, lease)  # lease still holds the old RV
    assert (stale.value.status, json.loads(stale.value.body)["reason"]) == (409, "Conflict")
    renewed.metadata.resource_version = None
    with pytest.raises(ApiException) as unconditional:
        leases.replace_namespaced_lease("regcred", NS, renewed)
    assert unconditional.value.status == 422
    assert "must be specified for an update" in json.loads(unconditional.value.body)["message"]
    leases.replace_namespaced_lease("other", NS, client.V1Lease(
        metadata=client.V1ObjectMeta(name="other"), spec=spec))
    assert server.requests[-1].status == 201  # PUT creates Leases (AllowCreateOnUpdate)


def test_core_and_events_v1_events_share_storage(api):
    core, events = client.CoreV1Api(api), client.EventsV1Api(api)
    events.create_namespaced_event(NS, client.EventsV1Event(
        metadata=client.V1ObjectMeta(name="pod.1"), event_time=datetime.now(timezone.utc),
        reason="PullSecretCreated", note="created regcred-pull", type="Normal",
        action="Create", reporting_controller="regcred", reporting_instance="regcred-0",
        regarding=client.V1ObjectReference(kind="Pod", name="p", namespace=NS)))
    legacy = core.read_namespaced_event("pod.1", NS)
    assert (legacy.message, legacy.involved_object.name, legacy.reporting_component) == (
        "created regcred-pull", "p", "regcred")
    # A core/v1 Event written without eventTime reads back as "eventTime": null, which
    # events.k8s.io/v1 declares required: the real client fails on it just the same.
    core.create_namespaced_event(NS, client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="pod.2"), reason="R", message="m", type="Normal",
        involved_object=client.V1ObjectReference(kind="Pod", name="p", namespace=NS)))
    raw = json.loads(events.read_namespaced_event("pod.2", NS, _preload_content=False).data)
    assert (raw["eventTime"], raw["note"], raw["regarding"]["name"]) == (None, "m", "p")
    with pytest.raises(ApiException) as invalid:
        events.create_namespaced_event(NS, {"metadata": {"name": "bad"},
                                            "eventTime": "2025-01-01T00:00:00.000000Z"})
    causes = {cause["field"] for cause in json.loads(invalid.value.body)["details"]["causes"]}
    assert causes == {"reportingController", "reportingInstance", "action", "reason", "type"}


ERRORS = [
    pytest.param(lambda c: c.read_namespaced_secret("missing", NS),
                 404, "NotFound", 'secrets "missing" not found', id="get-missing"),
    pytest.param(lambda c: c.create_namespaced_secret("nowhere", secret("s")),
                 404, "NotFound", 'namespaces "nowhere" not found', id="missing-namespace"),
    pytest.param(lambda c: c.create_namespaced_secret(NS, secret("taken")),
                 409, "AlreadyExists", 'secrets "taken" already exists', id="already-exists"),
    pytest.param(lambda c: c.replace_namespaced_secret(
        "taken", NS, {"metadata": {"name": "taken", "resourceVersion": "1"}}),
        409, "Conflict", "the object has been modified; please apply", id="stale-put"),
    pytest.param(lambda c: c.patch_namespaced_secret(
        "taken", NS, {"metadata": {"resourceVersion": "1"}}),
        409, "Conflict", 'Operation cannot be fulfilled on secrets "taken"', id="stale-patch"),
    pytest.param(lambda c: c.create_namespaced_secret(NS, secret("Bad_Name")),
                 422, "Invalid", 'Secret "Bad_Name" is invalid: metadata.name: Invalid value',
                 id="secret-name-not-subdomain"),
    pytest.param(lambda c: c.create_namespaced_config_map(NS, secret("cfg\n")),
                 422, "Invalid", "metadata.name: Invalid value", id="name-with-newline"),
    pytest.param(lambda c: c.create_namespace({"metadata": {"name": "a.b"}}),
                 422, "Invalid", "RFC 1123 label", id="namespace-name-not-label"),
    pytest.param(lambda c: c.create_namespaced_secret(NS, secret(
        "d", type="kubernetes.io/dockerconfigjson", data={"x": b64("{}")})),
        422, "Invalid", "data[.dockerconfigjson]: Required value", id="dockerconfigjson-no-key"),
    pytest.param(lambda c: c.create_namespaced_secret(NS, secret("l", {"bad key!": "v"})),
                 422, "Invalid", "metadata.labels", id="invalid-label-key"),
    pytest.param(lambda c: c.replace_namespaced_secret("taken", NS, secret(
        "taken", type="kubernetes.io/tls", data={"tls.crt": "", "tls.key": ""})),
        422, "Invalid", "type: Invalid value", id="secret-type-immutable"),
    pytest.param(lambda c: c.create_namespaced_secret(
        NS, {"metadata": {"name": "rv", "resourceVersion": "5"}}),
        500, "InternalError", "resourceVersion should not be set", id="create-with-rv"),
    pytest.param(lambda c: c.create_namespaced_secret(NS, secret("b", data={"k": "%%%"})),
                 400, "BadRequest", "illegal base64", id="bad-base64"),
    pytest.param(lambda c: c.replace_namespaced_secret("taken", NS, secret("other")),
                 400, "BadRequest", "does not match the name on the URL", id="put-name-mismatch"),
    pytest.param(lambda c: c.list_namespaced_secret(NS, label_selector="a in (b"),
                 400, "BadRequest", "unable to parse requirement", id="bad-label-selector"),
    pytest.param(lambda c: c.list_namespaced_secret(NS, field_selector="spec.x=y"),
                 400, "BadRequest", "field label not supported: spec.x", id="bad-field-selector"),
]


@pytest.mark.parametrize(("call", "code", "reason", "message"), ERRORS)
def test_errors_are_real_status_bodies(server, core, call, code, reason, message):
    server.put_object("secrets", secret("taken"), namespace=NS)
    with pytest.raises(ApiException) as raised:
        call(core)
    body = json.loads(raised.value.body)
    assert (raised.value.status, body["code"], body["reason"]) == (code, code, reason)
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert message in body["message"]


def test_invalid_details_name_the_kind_and_causes(core):
    # NotFound/Conflict details carry the resource ("secrets"); Invalid carries the Kind.
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_secret(NS, secret("Bad"))
    details = json.loads(raised.value.body)["details"]
    assert (details["name"], details["kind"]) == ("Bad", "Secret")
    assert details["causes"][0]["field"] == "metadata.name"
    assert details["causes"][0]["reason"] == "FieldValueInvalid"


def test_immutable_secret_rejects_data_changes(core):
    core.create_namespaced_secret(NS, secret("frozen", data={"k": b64("v")}, immutable=True))
    with pytest.raises(ApiException) as raised:
        core.patch_namespaced_secret("frozen", NS, {"data": {"k": b64("w")}})
    assert raised.value.status == 422
    assert "field is immutable when `immutable` is set" in json.loads(raised.value.body)["message"]


def test_forbid_rule_is_scoped_and_removable(server, core):
    rule = server.forbid(verb="create", resource="secrets", namespace="kube-system")
    with pytest.raises(ApiException) as denied:
        core.create_namespaced_secret("kube-system", secret("s"))
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"] == (
        'secrets is forbidden: User "system:serviceaccount:regcred:regcred" cannot create '
        'resource "secrets" in API group "" in the namespace "kube-system"')
    core.create_namespaced_secret(NS, secret("s"))
    server.allow(rule)
    core.create_namespaced_secret("kube-system", secret("s"))


def test_wrong_token_is_unauthorized(server, core):
    core.list_namespace()
    server.token = "rotated"
    with pytest.raises(ApiException) as raised:
        core.list_namespace()
    assert (raised.value.status, json.loads(raised.value.body)["reason"]) == (401, "Unauthorized")


LABELLED = {"s1": {"app": "web", "tier": "fe"}, "s2": {"app": "web", "tier": "be"},
            "s3": {"app": "db"}, "s4": {}}


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param("app=web", ["s1", "s2"], id="equals"),
    pytest.param("app==web", ["s1", "s2"], id="double-equals"),
    pytest.param("app!=web", ["s3", "s4"], id="not-equals-includes-missing-key"),
    pytest.param("app in (web, db)", ["s1", "s2", "s3"], id="in"),
    pytest.param("app notin (web)", ["s3", "s4"], id="notin-includes-missing-key"),
    pytest.param("tier", ["s1", "s2"], id="exists"),
    pytest.param("!tier", ["s3", "s4"], id="not-exists"),
    pytest.param("app=web,tier=be", ["s2"], id="and"),
    pytest.param("app in (db,web),tier!=fe", ["s2", "s3"], id="set-and-not-equals"),
    pytest.param("", ["s1", "s2", "s3", "s4"], id="empty-selects-all"),
])
def test_label_selectors(server, core, selector, expected):
    for name, labels in LABELLED.items():
        server.put_object("secrets", secret(name, labels), namespace=NS)
    assert names(core.list_namespaced_secret(NS, label_selector=selector).items) == expected


@pytest.mark.parametrize(("selector", "expected"), [
    pytest.param("metadata.name=b", [("team", "b")], id="name"),
    pytest.param("metadata.namespace=team", [("team", "a"), ("team", "b")], id="namespace"),
    pytest.param("metadata.namespace!=team", [(NS, "a")], id="not-namespace"),
    pytest.param("type=kubernetes.io/tls", [("team", "b")], id="secret-type"),
])
def test_field_selectors_across_namespaces(server, core, selector, expected):
    server.add_namespace("team")
    server.put_object("secrets", secret("a"), namespace=NS)
    server.put_object("secrets", secret("a"), namespace="team")
    server.put_object("secrets", secret("b", type="kubernetes.io/tls",
                                        data={"tls.crt": "", "tls.key": ""}), namespace="team")
    listed = core.list_secret_for_all_namespaces(field_selector=selector)
    assert [(s.metadata.namespace, s.metadata.name) for s in listed.items] == expected
    assert listed.metadata.resource_version == server.resource_version


def test_pagination_is_a_consistent_snapshot(server, core):
    for i in range(25):
        server.put_object("configmaps", {"metadata": {"name": f"c{i:02}"}, "data": {"v": "0"}},
                          namespace=NS)
    first = core.list_namespaced_config_map(NS, limit=10)
    assert (len(first.items), first.metadata.remaining_item_count) == (10, 15)
    server.delete_object("configmaps", NS, "c24")
    server.put_object("configmaps", {"metadata": {"name": "c15"}, "data": {"v": "1"}}, NS)
    server.put_object("configmaps", {"metadata": {"name": "c99"}}, NS)
    pages, token = [first], first.metadata._continue
    while token:
        pages.append(core.list_namespaced_config_map(NS, limit=10, _continue=token))
        token = pages[-1].metadata._continue
    items = [item for page in pages for item in page.items]
    assert names(items) == [f"c{i:02}" for i in range(25)]
    assert {item.metadata.name: item.data["v"] for item in items}["c15"] == "0"
    assert {page.metadata.resource_version for page in pages} == {first.metadata.resource_version}


def test_continue_token_expires_with_history():
    with FakeApiServer(history_size=3) as server:
        core = client.CoreV1Api(server.api_client())
        for i in range(2):
            server.put_object("secrets", secret(f"s{i}"), NS)
        first = core.list_namespaced_secret(NS, limit=1)
        for i in range(5):
            server.put_object("configmaps", {"metadata": {"name": f"c{i}"}}, NS)
        with pytest.raises(ApiException) as raised:
            core.list_namespaced_secret(NS, limit=1, _continue=first.metadata._continue)
        assert (raised.value.status, json.loads(raised.value.body)["reason"]) == (410, "Expired")


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


def test_generate_name_dry_run_and_auto_created_namespaces(server, core):
    generated = core.create_namespaced_secret(NS, {"metadata": {"generateName": "pull-"}})
    assert generated.metadata.name.startswith("pull-") and len(generated.metadata.name) == 10
    before = server.resource_version
    core.create_namespaced_secret(NS, secret("dry"), dry_run="All")
    assert server.get_object("secrets", NS, "dry") is None
    assert server.resource_version == before
    server.auto_create_namespaces = True
    core.create_namespaced_secret("fresh", secret("s"))
    assert server.get_object("namespaces", None, "fresh")["status"]["phase"] == "Active"


def test_delete_preconditions_conflict(core):
    core.create_namespaced_secret(NS, secret("s"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))
    with pytest.raises(ApiException) as raised:
        core.delete_namespaced_secret("s", NS, body=options)
    assert raised.value.status == 409
    assert "Precondition failed: UID in precondition: other" in raised.value.body


def test_direct_store_access(server):
    stored = server.put_object("secrets", secret("s", data={"k": b64("v")}), NS)
    assert stored["kind"] == "Secret" and stored["metadata"]["resourceVersion"]
    assert server.get_object("secrets", NS, "s")["data"] == {"k": b64("v")}
    assert [obj["metadata"]["name"] for obj in server.objects("secrets")] == ["s"]
    assert server.delete_object("secrets", NS, "s") is True
    assert server.delete_object("secrets", NS, "s") is False
    with pytest.raises(ApiError) as invalid:
        server.put_object("secrets", secret("Not_Valid"), NS)
    assert invalid.value.code == 422
    assert [ns["metadata"]["name"] for ns in server.objects("namespaces")] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]


def test_kubeconfig_file_works_with_new_client_from_config(server, tmp_path):
    path = server.kubeconfig(tmp_path / "kubeconfig")
    api = kubernetes.config.new_client_from_config(config_file=path)
    assert NS in names(client.CoreV1Api(api).list_namespace().items)


def test_discovery_endpoints(api):
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {group.name for group in client.ApisApi(api).get_api_versions().groups}
    assert {"coordination.k8s.io", "events.k8s.io"} <= groups


def test_many_concurrent_clients(server):
    server.latency = 0.005
    server.put_object("secrets", secret("s"), NS)
    core = client.CoreV1Api(server.api_client(connection_pool_maxsize=50))
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: core.read_namespaced_secret("s", NS).metadata.name,
                                range(400)))
    assert results == ["s"] * 400
    assert server.count(verb="get", status=200) == 400


@pytest.fixture
def file_descriptors():
    """Room for 1000 client plus 1000 server sockets in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2500
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def max_in_flight(records) -> int:
    edges = sorted([(r.time, 1) for r in records] + [(r.time + r.duration, -1) for r in records])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_a_thousand_simultaneous_connections(server, file_descriptors):
    server.latency = 0.5  # long enough for requests to pile up while TLS handshakes go on
    context = ssl.create_default_context(cadata=server.ca_pem.decode())
    host, port = server.address.split(":")
    request = (f"GET /api/v1/namespaces/{NS} HTTP/1.1\r\nHost: {server.address}\r\n"
               f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n").encode()

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(request)
        response = await reader.read()
        writer.close()
        return response.split(b" ", 2)[1]

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(one() for _ in range(1000)))

    assert asyncio.run(all_at_once()) == [b"200"] * 1000
    assert server.count(verb="get", resource="namespaces", status=200) == 1000
    assert max_in_flight(server.requests) >= 100
