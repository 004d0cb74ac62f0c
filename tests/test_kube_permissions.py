"""Naming a missing RBAC permission from a 403: the API server's own words, parsed."""

from __future__ import annotations

import json
import logging

import pytest
from kubernetes.client import ApiException

from webhook.kube.permissions import LOG_EVERY_SECONDS, MissingPermission, PermissionReporter, missing_permission

SA = "system:serviceaccount:regcred-system:regcred"


def refusal(message: str, status: int = 403) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": "Forbidden",
                           "code": status})
    return exc


@pytest.mark.parametrize(("message", "status", "expected"), [
    pytest.param(f'secrets is forbidden: User "{SA}" cannot create resource "secrets" in API group "" '
                 'in the namespace "team-a"', 403, MissingPermission("create", "secrets", "", "team-a"),
                 id="namespaced"),
    pytest.param(f'namespaces is forbidden: User "{SA}" cannot list resource "namespaces" in API group "" '
                 'at the cluster scope', 403, MissingPermission("list", "namespaces", "", None), id="cluster-scope"),
    pytest.param(f'leases.coordination.k8s.io "regcred" is forbidden: User "{SA}" cannot update resource '
                 '"leases" in API group "coordination.k8s.io" in the namespace "regcred-system"', 403,
                 MissingPermission("update", "leases", "coordination.k8s.io", "regcred-system"), id="named-in-group"),
    pytest.param(f'pods "p" is forbidden: User "{SA}" cannot patch resource "pods/ephemeralcontainers" in API '
                 'group "" in the namespace "a"', 403, MissingPermission("patch", "pods/ephemeralcontainers", "", "a"),
                 id="subresource"),
    pytest.param("unable to create new content in namespace gone because it is being terminated", 403, None,
                 id="terminating-namespace-is-not-rbac"),
    pytest.param(f'User "{SA}" cannot create resource "secrets"', 500, None, id="not-a-403"),
])
def test_a_refusal_names_the_permission(message, status, expected):
    assert missing_permission(refusal(message, status)) == expected


@pytest.mark.parametrize("body", [None, "", "not json", "[]", json.dumps({"message": 7})],
                         ids=["none", "empty", "text", "list", "odd-message"])
def test_an_unreadable_body_is_no_permission(body):
    exc = ApiException(status=403)
    exc.body = body
    assert missing_permission(exc) is None


def test_every_refusal_counts_and_each_permission_logs_once_a_minute(caplog):
    now = [0.0]
    counted: list[tuple[str, str]] = []
    report = PermissionReporter(lambda verb, resource: counted.append((verb, resource)), clock=lambda: now[0])
    create = refusal(f'User "{SA}" cannot create resource "secrets" in API group "" in the namespace "a"')
    delete = refusal(f'User "{SA}" cannot delete resource "secrets" in API group "" in the namespace "a"')
    with caplog.at_level(logging.ERROR, logger="webhook.kube.permissions"):
        for exc in (create, create, delete, create):
            report(exc)
        now[0] += LOG_EVERY_SECONDS
        report(create)
    assert counted == [("create", "secrets")] * 2 + [("delete", "secrets")] + [("create", "secrets")] * 2
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "RBAC refused regcred: create secrets in namespace a; if it persists, grant it to regcred's "
        "ServiceAccount (the chart's ClusterRole and Role list what regcred needs)",
        "RBAC refused regcred: delete secrets in namespace a; if it persists, grant it to regcred's "
        "ServiceAccount (the chart's ClusterRole and Role list what regcred needs)",
        "RBAC refused regcred: create secrets in namespace a; if it persists, grant it to regcred's "
        "ServiceAccount (the chart's ClusterRole and Role list what regcred needs)",
    ]
