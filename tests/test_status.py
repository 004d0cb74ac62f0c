"""GET /status on the metrics port: per-registry credential state, built only from /metrics."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from tests.conftest import build_deps
from webhook.app import create_metrics_app
from webhook.providers import CredentialUnavailable
from webhook.pullsecrets import EXPIRES_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, REGISTRY_LABEL
from webhook.status import count_managed

REGISTRIES = """
registries:
  - {id: good, url: good.example.com, type: basic, secretRef: good-creds}
  - {id: missing, url: missing.example.com, type: basic, secretRef: no-such-secret}
"""
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def managed(namespace: str, registry_id: str, expires: str | None = None, ours: bool = True) -> dict:
    labels = {REGISTRY_LABEL: registry_id, **({MANAGED_BY_LABEL: MANAGED_BY} if ours else {})}
    annotations = {EXPIRES_ANNOTATION: expires} if expires else {}
    return {"metadata": {"name": f"regcred-{registry_id}", "namespace": namespace, "labels": labels,
                         "annotations": annotations}, "type": "kubernetes.io/dockerconfigjson", "data": {}}


@pytest.fixture
def deps():
    deps = build_deps(REGISTRIES, {"good-creds": {"username": "u", "password": "status-test-pw"}})
    good, missing = deps.config.registries.registries

    async def mint() -> None:
        await deps.tokens.get(good)
        with pytest.raises(CredentialUnavailable):
            await deps.tokens.get(missing)
    asyncio.run(mint())
    for secret in (managed("team-alpha", "good"), managed("team-beta", "good", "2026-06-01T11:00:00Z"),
                   managed("team-gamma", "good", "2026-06-01T13:00:00Z"), managed("foreign-ns", "good", ours=False)):
        deps.store.store.put(secret)
    return deps


def test_status_reports_each_registry_from_the_metrics(deps):
    client = TestClient(create_metrics_app(deps, clock=lambda: NOW))
    body = client.get("/status").json()
    assert body["configValid"] is True and body["configGeneration"] == 1
    assert body["cachesSynced"] is True and body["leader"] is False  # no Lease held without a cluster
    good, missing = body["registries"]["good"], body["registries"]["missing"]
    assert good["type"] == "basic" and good["credentialsAvailable"] is True
    assert good["lastSuccess"].endswith("Z") and good["expiresAt"] is None and good["lastError"] is None
    assert (good["managedSecrets"], good["staleSecrets"]) == (3, 1)
    assert missing["credentialsAvailable"] is False and missing["lastSuccess"] is None
    assert missing["lastError"]["class"] == "CredentialUnavailable"


def test_status_says_nothing_that_metrics_does_not(deps):
    client = TestClient(create_metrics_app(deps, clock=lambda: NOW))
    text = client.get("/status").text
    metrics = client.get("/metrics").text
    assert not re.search(r"team-|foreign-ns|no-such-secret|good-creds|status-test-pw", text)
    for word in set(re.findall(r'"([A-Za-z][\w-]*)"', text)) - STATUS_KEYS:
        assert word in metrics, f"{word} is in /status but not in /metrics"


STATUS_KEYS = {"configValid", "configGeneration", "cachesSynced", "leader", "registries", "type",
               "credentialsAvailable", "lastSuccess", "expiresAt", "lastError", "class", "time",
               "managedSecrets", "staleSecrets"}


@pytest.mark.parametrize(("secrets", "total", "stale"), [
    pytest.param([], {}, {}, id="none"),
    pytest.param([managed("a", "x")], {"x": 1}, {}, id="no-expiry-is-never-stale"),
    pytest.param([managed("a", "x", "2026-06-01T12:00:00Z")], {"x": 1}, {"x": 1}, id="expiring-now-is-stale"),
    pytest.param([managed("a", "x", "not-a-date")], {"x": 1}, {"x": 1}, id="unreadable-is-stale"),
    pytest.param([managed("a", "x", "2026-06-01T12:00:01Z"), managed("b", "y", "2020-01-01T00:00:00Z")],
                 {"x": 1, "y": 1}, {"y": 1}, id="per-registry"),
])
def test_count_managed(secrets, total, stale):
    counted, stale_counted = count_managed(secrets, NOW)
    assert dict(counted) == total and {k: v for k, v in stale_counted.items() if v} == stale
