"""The chart grants exactly what the code asks the API server for: derived, not enshrined.

One regcred in cluster mode goes through everything it does against the fake API server
(start-up lists and watches, leading, admissions, a foreign Secret, a namespace newer than
its watch, a rotation, a prune, a rejected registry list); every request it made is in the
fake's log, as an audit log would show it. The verbs used must be the verbs the chart's
ClusterRole and Role grant: a verb granted but never used is privilege nobody needs. And
every request must be one RBAC would allow: a request naming an object (by path, or by a
``metadata.name`` field selector for a list or watch) is matched against ``resourceNames``, so
a label-selected list of every Secret would be refused.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import yaml

from tests.fakes.apiserver import FakeApiServer
from tests.support.helmchart import render
from tests.support.kube import (
    CONFIGMAP,
    OWN,
    PRIVATE,
    SECRET_NAME,
    Instance,
    eventually,
    password_of,
    pod_review,
    seed_cluster,
    set_password,
)

PICKY = "registry.example.com/picky"
REGISTRIES = (f"registries:\n  - {{id: private, url: {PRIVATE}, type: basic, secretRef: private-creds}}\n"
              f"  - {{id: picky, url: {PICKY}, type: basic, secretRef: private-creds,"
              " namespaceSelector: {matchLabels: {env: prod}}}\n")


PROVIDED = {"tls": {"mode": "provided", "provided": {"secretName": "tls", "caBundle": "Q0E="}}}


def _registries(api: FakeApiServer, text: str) -> None:
    api.put_object("configmaps", {"metadata": {"name": CONFIGMAP}, "data": {"registries.yaml": text}}, OWN)


async def _everything_regcred_does(api: FakeApiServer) -> None:
    regcred = await Instance(api, identity="solo").start()
    await eventually(lambda: regcred.leading, timeout=10, what="leading")
    assert (await regcred.admit("team-a"))[0] == 200  # create
    assert (await regcred.admit("team-b"))[0] == 200  # a foreign Secret: 409, then read
    # A namespace created just before its Pod, while the namespace watch is reconnecting.
    api.hang_next(1, seconds=2, verb="watch", resource="namespaces")
    api.drop_watches()
    api.add_namespace("fresh", {"env": "prod"})
    answer = await regcred.http.post("/mutate", json=pod_review("fresh", f"{PICKY}/app:1"))
    assert "warnings" not in answer.json()["response"]
    set_password(api, "pass-2")  # the refresher rotates: update
    await eventually(lambda: password_of(api.get_object("secrets", "team-a", SECRET_NAME)).startswith("pass-2"),
                     timeout=10, what="the rotation")
    _registries(api, REGISTRIES.split("  - {id: picky")[0])  # picky removed: pruned
    await eventually(lambda: api.get_object("secrets", "fresh", "regcred-picky") is None, timeout=10,
                     what="the prune")
    _registries(api, "registries: [broken\n")  # rejected: a Warning Event on the ConfigMap
    await eventually(lambda: api.objects("events", OWN), timeout=10, what="the event")
    await regcred.stop()  # releases the Lease


def _named(record) -> str | None:
    """The object a request names: in its path, or (list, watch) in a metadata.name field selector."""
    if record.name:
        return record.name
    selector = parse_qs(record.query).get("fieldSelector", [""])[0]
    return selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None


def _allows(rule: dict, record) -> bool:
    names = rule.get("resourceNames")
    return (record.group in rule["apiGroups"] and record.resource in rule["resources"] and record.verb in rule["verbs"]
            and (names is None or _named(record) in names))


def test_the_chart_grants_exactly_the_verbs_regcred_uses():
    with FakeApiServer() as api:
        seed_cluster(api, ["team-a", "team-b"])
        _registries(api, REGISTRIES)
        api.put_object("secrets", {"metadata": {"name": SECRET_NAME}}, "team-b")
        asyncio.run(_everything_regcred_does(api))
        requests = [r for r in api.requests if r.resource is not None]
    # tls.mode managed's rules (its certificate Secret, the webhook configuration) are proven on
    # the real API server: tests/e2e/test_managed_cert.py.
    rendered = render({"registries": yaml.safe_load(REGISTRIES)["registries"], **PROVIDED})
    rules = [rule for kind in ("ClusterRole", "Role") for rule in rendered.get(kind)["rules"]]
    used = {(r.group, r.resource, r.verb) for r in requests}
    granted = {(group, resource, verb) for rule in rules
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert used == granted
    refused = [(r.verb, r.resource, r.namespace, _named(r)) for r in requests
               if not any(_allows(rule, r) for rule in rules)]
    assert refused == []


def test_no_rule_grants_every_secret_by_default():
    rendered = render({"registries": yaml.safe_load(REGISTRIES)["registries"], **PROVIDED})
    secret_rules = [rule for kind in ("ClusterRole", "Role") for rule in rendered.get(kind)["rules"]
                    if "secrets" in rule["resources"]]
    assert {tuple(rule["verbs"]) for rule in secret_rules if "resourceNames" not in rule} == {("create",)}
    names = {tuple(rule["resourceNames"]) for rule in secret_rules if "resourceNames" in rule}
    assert names == {("regcred-picky", "regcred-private"), ("private-creds",)}
