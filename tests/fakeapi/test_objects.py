"""Tests of the fake Kubernetes API server (``tests/fakes/apiserver.py``).

Every test drives the real ``kubernetes`` client over HTTPS, so what passes here is what
regcred's own tests can rely on. The expected bodies, codes and event orders are those of a
real kube-apiserver; where the fake reproduces a quirk, the test names the quirk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakes.apiserver import FakeApiServer
from tests.support.fakeapi import NS, names, secret
from tests.support.kube import b64


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
    # The real DELETE answers the Namespace itself, Terminating, not a Status, and the API
    # server refuses new content until the namespace controller has emptied and removed it.
    assert deleted["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_secret("team-a", secret("t"))
    assert (refused.value.status, json.loads(refused.value.body)["reason"]) == (403, "Forbidden")
    assert "team-a" in names(core.list_namespace().items)
    server.finish_namespace_deletion("team-a")
    assert server.objects("secrets", "team-a") == []
    assert "team-a" not in names(core.list_namespace().items)


def test_lease_semantics_for_leader_election(server, api):
    leases = client.CoordinationV1Api(api)
    now = datetime.now(UTC)
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
        metadata=client.V1ObjectMeta(name="pod.1"), event_time=datetime.now(UTC),
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
