"""The fake API server (tests/fakes) against the real one: the same calls, the same answers.

The fake stays for faults a real API server cannot produce on demand (500s, 429s, hangs,
latency); every behaviour the unit tests rely on besides those is checked here against
kube-apiserver. Where they disagree, the real one is right and the fake is fixed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.fakes.apiserver import FakeApiServer

_serial = itertools.count()


@pytest.fixture(scope="module")
def fake():
    with FakeApiServer(namespaces=()) as server:
        yield server


def outcome(call: Callable[[], object]) -> tuple:
    """What a client can see of an answer: the status code and reason, or success."""
    try:
        call()
    except ApiException as exc:
        body = json.loads(exc.body or "{}")
        return exc.status, body.get("reason"), (body.get("details") or {}).get("kind")
    return ("ok",)


def namespace(core: k8s.CoreV1Api, labels: dict | None = None) -> str:
    name = f"agree-{next(_serial)}-{id(core) % 1000}"
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def secret(name: str = "s", **extra) -> dict:
    return {"metadata": {"name": name, **extra}, "type": "Opaque", "data": {"k": "dg=="}}


def create_in_missing_namespace(core):
    return outcome(lambda: core.create_namespaced_secret("no-such-namespace-here", secret()))


def create_in_terminating_namespace(core):
    name = namespace(core)
    core.delete_namespace(name)
    return outcome(lambda: core.create_namespaced_secret(name, secret()))


def create_twice(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret())
    return outcome(lambda: core.create_namespaced_secret(name, secret()))


def replace_with_a_stale_version(core):
    name = namespace(core)
    first = core.create_namespaced_secret(name, secret())
    core.replace_namespaced_secret("s", name, secret(resourceVersion=first.metadata.resource_version))
    return outcome(lambda: core.replace_namespaced_secret(
        "s", name, secret(resourceVersion=first.metadata.resource_version)))


def replace_without_a_version(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret())
    return outcome(lambda: core.replace_namespaced_secret("s", name, secret()))


def replace_missing(core):
    name = namespace(core)
    return outcome(lambda: core.replace_namespaced_secret("s", name, secret()))


def delete_missing(core):
    name = namespace(core)
    return outcome(lambda: core.delete_namespaced_secret("s", name))


def invalid_name(core):
    name = namespace(core)
    return outcome(lambda: core.create_namespaced_secret(name, secret("Not_A_Name")))


def change_the_type(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret())
    changed = {**secret(), "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}
    return outcome(lambda: core.replace_namespaced_secret("s", name, changed))


def dry_run_create_stores_nothing(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret(), dry_run="All")
    return outcome(lambda: core.read_namespaced_secret("s", name))


def deleted_namespace_is_terminating(core):
    name = namespace(core)
    core.delete_namespace(name)
    return core.read_namespace(name).status.phase


def field_selector_narrows_a_list(core):
    name = namespace(core)
    for each in ("a", "b"):
        core.create_namespaced_secret(name, secret(each))
    return [s.metadata.name for s in core.list_namespaced_secret(name, field_selector="metadata.name=b").items]


def label_selector_narrows_a_list(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret("a", labels={"app.kubernetes.io/managed-by": "regcred"}))
    core.create_namespaced_secret(name, secret("b"))
    return [s.metadata.name for s in core.list_namespaced_secret(
        name, label_selector="app.kubernetes.io/managed-by=regcred").items]


def merge_patch_removes_a_label(core):
    name = namespace(core, {"team": "a", "keep": "yes"})
    core.patch_namespace(name, {"metadata": {"labels": {"team": None}}})
    labels = core.read_namespace(name).metadata.labels
    return sorted(labels)


def list_then_watch_sees_a_deletion(core):
    name = namespace(core)
    core.create_namespaced_secret(name, secret())
    version = core.list_namespaced_secret(name).metadata.resource_version
    core.delete_namespaced_secret("s", name)
    response = core.list_namespaced_secret(name, watch=True, resource_version=version, timeout_seconds=2,
                                           _preload_content=False)
    first = json.loads(response.readline() or b"{}")
    response.close()  # not returned to the pool: the stream was not read to its end
    return first.get("type"), first.get("object", {}).get("metadata", {}).get("name")


@pytest.mark.parametrize("scenario", [
    create_in_missing_namespace, create_in_terminating_namespace, create_twice, replace_with_a_stale_version,
    replace_without_a_version, replace_missing, delete_missing, invalid_name, change_the_type,
    dry_run_create_stores_nothing, deleted_namespace_is_terminating, field_selector_narrows_a_list,
    label_selector_narrows_a_list, merge_patch_removes_a_label, list_then_watch_sees_a_deletion,
], ids=lambda scenario: scenario.__name__.replace("_", "-"))
def test_the_fake_answers_like_the_real_api_server(admin, fake, scenario):
    real = scenario(k8s.CoreV1Api(admin))
    faked = scenario(k8s.CoreV1Api(fake.api_client()))
    assert faked == real
