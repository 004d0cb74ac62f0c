"""Tenancy restricts which namespaces receive a registry's Secret; it does not touch the CI API.
A pipeline's token is scoped by its role and ``registries`` list, not by namespaces, so a
registry limited to some namespaces (or to none that exist) still answers CI callers.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support.fake_tokens import FakeMaterial
from webhook.activeregistries import ActiveRegistries
from webhook.ci.endpoint import create_ci_app
from webhook.ci.tokens import TokenList, create_token, entry_yaml
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers.basic import BasicProvider

REGISTRIES = """
registries:
- {id: by-list, url: a.example.com, type: basic, secretRef: creds, exposeToCI: true, namespaces: [team-a]}
- {id: by-selector, url: b.example.com, type: basic, secretRef: creds, exposeToCI: true,
   namespaceSelector: {matchLabels: {env: prod}}}
- {id: by-both, url: c.example.com, type: basic, secretRef: creds, exposeToCI: true, namespaces: [nowhere],
   namespaceSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}
- {id: unrestricted, url: d.example.com, type: basic, secretRef: creds, exposeToCI: true}
"""
USERNAME, PASSWORD = "ci-robot", "tenancy-ci-pa55"


@pytest.fixture(scope="module")
def ci():
    metrics = Metrics()
    config = ActiveRegistries(metrics)
    assert config.apply_text(REGISTRIES, "test")
    material = FakeMaterial({"creds": {"username": USERNAME.encode(), "password": PASSWORD.encode()}})
    tokens = CredentialCache({"basic": BasicProvider()}, material, metrics)
    token, entry = create_token("pipeline")
    token_list = TokenList()
    assert token_list.apply_text("tokens:\n" + entry_yaml(entry), "test")
    with TestClient(create_ci_app(config, tokens, token_list, metrics)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


@pytest.mark.parametrize("registry", ["by-list", "by-selector", "by-both", "unrestricted"])
def test_ci_callers_get_credentials_of_namespace_restricted_registries(ci, registry):
    answer = ci.get(f"/registries/{registry}/creds")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["username"], answer.json()["password"]) == (USERNAME, PASSWORD)
