"""``type: acr``: Entra identities exchanged for ACR refresh tokens, against local stand-ins.

azure-identity talks to tests/support/entra.py's Entra over TLS (``AZURE_AUTHORITY_HOST``);
the exchange goes to its ACR endpoint (``REGCRED_ACR_ENDPOINT_URL``). Nothing inside
azure-identity or requests is patched: the stand-ins check what a real tenant and login
server check, so a wrong scope, tenant, secret or assertion fails here as it would there.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import yaml
from starlette.testclient import TestClient

from tests.support.entra import ACR_AUDIENCE, Azure, azure, azure_servers  # noqa: F401
from tests.support.fake_tokens import Clock, sample
from tests.support.hygiene import format_records
from webhook.activeregistries import ActiveRegistries
from webhook.ci.endpoint import create_ci_app
from webhook.ci.tokens import TokenList, create_token
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers import CredentialUnavailable
from webhook.providers.acr import USERNAME, AcrProvider, authority_for
from webhook.registries import Registry, parse_registries
from webhook.yamlload import ConfigError

HOST = "contoso.azurecr.io"
SUBJECT = "system:serviceaccount:regcred:regcred"


def acr(secret_ref: str | None = "acr-sp", url: str = f"{HOST}/team-a", **options) -> Registry:
    fields = {"id": "acr-prod", "url": url, "type": "acr"}
    if secret_ref:
        fields["secretRef"] = secret_ref
    if options:
        fields["acr"] = options
    return Registry.model_validate(fields)


def material(app, **changes) -> dict[str, bytes]:
    values = {"tenant_id": app.tenant, "client_id": app.client_id, "client_secret": app.secret, **changes}
    return {key: value.encode() for key, value in values.items() if value is not None}


class Material:
    def __init__(self, data):
        self.data = data

    def read(self, name: str):
        return self.data


# --- the registry list ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    pytest.param("contoso.azurecr.io", id="public"),
    pytest.param("contoso.azurecr.cn/team", id="china"),
    pytest.param("contoso.azurecr.us/a/b", id="us-government"),
    pytest.param("contoso-b4fjdkc8e3d2.azurecr.io", id="domain-name-label"),
])
def test_acr_login_servers_are_accepted(url: str) -> None:
    assert parse_registries(f"registries:\n  - {{id: ab, url: {url}, type: acr}}\n").registries[0].url == url


@pytest.mark.parametrize(("entry", "expected"), [
    pytest.param("{id: ab, url: contoso.azurecr.io.evil.com, type: acr}", "registries[0].url: type acr needs",
                 id="lookalike"),
    pytest.param("{id: ab, url: evil.com/contoso.azurecr.io, type: acr}", "registries[0].url: type acr needs",
                 id="in-path"),
    pytest.param("{id: ab, url: azurecr.io, type: acr}", "registries[0].url: type acr needs", id="bare-suffix"),
    pytest.param("{id: ab, url: contoso.azurecr.de, type: acr}", "registries[0].url: type acr needs",
                 id="retired-cloud"),
    pytest.param("{id: ab, url: contoso.azurecr.io, type: acr, acr: {tenantId: contoso}}",
                 "registries[0].acr.tenantId: must be a tenant ID", id="tenant-not-guid"),
    pytest.param("{id: ab, url: h.example.com, type: basic, secretRef: s, acr: {}}",
                 "registries[0].acr: only allowed with type acr", id="acr-options-on-basic"),
    pytest.param("{id: ab, url: contoso.azurecr.io, type: acr, acr: {tenant: x}}",
                 "registries[0].acr.tenant: unknown key", id="misspelt-option"),
])
def test_acr_config_errors_name_the_field(entry: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_registries(f"registries:\n  - {entry}\n")
    assert [error for error in raised.value.errors if error.startswith(expected)], raised.value.errors


@pytest.mark.parametrize(("host", "environment", "expected"), [
    pytest.param("contoso.azurecr.io", None, "https://login.microsoftonline.com", id="public"),
    pytest.param("contoso.azurecr.cn", None, "https://login.chinacloudapi.cn", id="china"),
    pytest.param("contoso.azurecr.us", None, "https://login.microsoftonline.us", id="us-government"),
    pytest.param("contoso.azurecr.cn", "https://login.partner.microsoftonline.cn", "https://login.partner.microsoftonline.cn",
                 id="set-authority-wins"),
])
def test_the_entra_authority_follows_the_cloud(host: str, environment: str | None, expected: str, monkeypatch) -> None:
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    if environment:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", environment)
    assert authority_for(acr(url=host)).rstrip("/") == expected


def test_check_config_and_match_understand_acr(tmp_path) -> None:
    good = tmp_path / "registries.yaml"
    good.write_text("registries:\n  - {id: acr-prod, url: contoso.azurecr.io/team-a, type: acr}\n"
                    "  - {id: acr-cn, url: contoso.azurecr.cn, type: acr, secretRef: acr-sp}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("registries:\n  - {id: acr-prod, url: contoso.azurecr.io, type: acr, acr: {tenantId: contoso}}\n"
                      "  - {id: lookalike, url: azurecr.io.example.com, type: acr}\n")

    def regcred(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=60)

    assert regcred("check-config", str(good)).stdout.strip().endswith("OK (2 registries)")
    refused = regcred("check-config", str(broken))
    assert refused.returncode == 1
    assert [line.split(": ", 1)[1].split(":")[0] for line in refused.stderr.splitlines() + refused.stdout.splitlines()
            if "registries[" in line] == ["registries[0].acr.tenantId", "registries[1].url"]
    images = ("contoso.azurecr.io/team-a/app:1", "contoso.azurecr.cn/x", "contoso.azurecr.io/team-b/app")
    rows = [line.split() for line in regcred("match", "--config", str(good), *images).stdout.splitlines()]
    assert [row[-1] for row in rows[1:]] == ["acr-prod", "acr-cn", "-"]


# --- minting -------------------------------------------------------------------------------


def test_service_principal_is_exchanged_for_a_refresh_token(azure: Azure) -> None:
    app = azure.entra.service_principal()
    credential = AcrProvider().mint(acr(), material(app))
    [access] = azure.entra.issued
    [refresh] = azure.acr.issued
    assert (credential.username, credential.password) == (USERNAME, refresh["refresh_token"])
    assert (access["aud"], access["appid"], access["tid"]) == (ACR_AUDIENCE, app.client_id, app.tenant)
    assert (refresh["aud"], refresh["tenant"]) == (HOST, app.tenant)  # service is the login server
    assert credential.expires_at == datetime.fromtimestamp(refresh["exp"], UTC)


def test_the_expiry_is_the_tokens_own_not_the_documented_three_hours(azure: Azure) -> None:
    azure.acr.refresh_life = 75 * 60
    credential = AcrProvider().mint(acr(), material(azure.entra.service_principal()))
    left = (credential.expires_at - datetime.now(UTC)).total_seconds()
    assert 74 * 60 < left <= 75 * 60


def test_acr_tenant_id_may_stand_in_for_the_secrets(azure: Azure) -> None:
    app = azure.entra.service_principal()
    AcrProvider().mint(acr(tenantId=app.tenant), material(app, tenant_id=None))
    assert azure.acr.issued[0]["tenant"] == app.tenant


def test_workload_identity_without_a_secret_ref(azure: Azure, monkeypatch, tmp_path) -> None:
    app = azure.entra.federated_app(SUBJECT)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(azure.entra.service_account_token(SUBJECT))
    # What the AKS workload identity webhook injects into a labelled Pod.
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", app.tenant)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    credential = AcrProvider().mint(acr(secret_ref=None), None)
    assert credential.password == azure.acr.issued[0]["refresh_token"]
    assert azure.acr.issued[0]["tenant"] == app.tenant  # from the access token's tid

    token_file.write_text(azure.entra.service_account_token("system:serviceaccount:other:intruder"))
    with pytest.raises(CredentialUnavailable, match=r"^acr-prod: Entra token request failed: .*AADSTS700213"):
        AcrProvider().mint(acr(secret_ref=None), None)


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param({"client_secret": "sp~not-the-right-secret-value"}, r"Entra token request failed: .*AADSTS7000215$",
                 id="wrong-secret"),
    pytest.param({"client_id": "11111111-2222-3333-4444-555555555555"}, r"AADSTS700016$", id="unknown-app"),
    pytest.param({"tenant_id": "99999999-2222-3333-4444-555555555555"}, r"AADSTS90002$", id="unknown-tenant"),
])
def test_entra_refusals_name_the_aadsts_code(azure: Azure, change: dict, expected: str) -> None:
    app = azure.entra.service_principal()
    with pytest.raises(CredentialUnavailable, match=f"^acr-prod: .*{expected}") as raised:
        AcrProvider().mint(acr(), material(app, **change))
    assert app.secret not in str(raised.value) and raised.value.__cause__ is None
    assert azure.acr.calls == 0


@pytest.mark.parametrize(("outage", "expected"), [
    pytest.param("unauthorized", "ACR token exchange refused: 401 UNAUTHORIZED", id="401"),
    pytest.param("unavailable", "ACR token exchange refused: 503 UNAVAILABLE", id="503"),
    pytest.param("drop", "ACR token exchange failed: ConnectionError", id="dropped"),
    pytest.param("no_exp", "ACR refresh token has no exp claim", id="no-exp"),
])
def test_exchange_failures_name_the_status(azure: Azure, outage: str, expected: str) -> None:
    app = azure.entra.service_principal()
    azure.acr.outage = outage
    with pytest.raises(CredentialUnavailable, match=f"^acr-prod: {expected}$"):
        AcrProvider().mint(acr(), material(app))


# --- through the token cache ---------------------------------------------------------------


def test_refresh_at_two_thirds_of_the_real_life_and_keep_the_last_during_an_outage(azure: Azure) -> None:
    azure.acr.refresh_life = 75 * 60  # what users have seen, not the documented 3 hours
    registry, clock = acr(), Clock.starting_now()
    azure.acr.clock = clock
    cache = CredentialCache({"acr": AcrProvider()}, Material(material(azure.entra.service_principal())), Metrics(),
                            clock=clock)

    async def settle() -> None:
        others = (t for t in asyncio.all_tasks() if t is not asyncio.current_task())
        await asyncio.gather(*others, return_exceptions=True)

    async def scenario() -> list[str]:
        seen = [(await cache.get(registry)).password]
        clock.now += 49 * 60  # before 2/3 of 75 minutes
        seen.append((await cache.get(registry)).password)
        await settle()
        clock.now += 2 * 60  # past 50 minutes: refreshed in the background
        seen.append((await cache.get(registry)).password)
        await settle()
        seen.append((await cache.get(registry)).password)
        azure.acr.outage = "unavailable"
        clock.now += 51 * 60  # the new token is due; the exchange is down
        seen.append((await cache.get(registry)).password)
        await settle()
        clock.now += 23 * 60  # 74 minutes into its life: still handed out
        seen.append((await cache.get(registry)).password)
        clock.now += 2 * 60  # past its real expiry
        with pytest.raises(CredentialUnavailable, match="503 UNAVAILABLE"):
            await cache.get(registry)
        return seen

    seen = asyncio.run(scenario())
    first, second = (issued["refresh_token"] for issued in azure.acr.issued)
    assert seen == [first, first, first, second, second, second]
    assert azure.acr.calls > 2  # the outage was tried, not skipped


def test_a_wrong_secret_is_logged_and_counted_with_its_code(azure: Azure, caplog) -> None:
    app, metrics = azure.entra.service_principal(), Metrics()
    wrong = Material(material(app, client_secret="sp~wrong-secret-for-the-log"))
    cache = CredentialCache({"acr": AcrProvider()}, wrong, metrics)
    with caplog.at_level(logging.INFO), pytest.raises(CredentialUnavailable, match="AADSTS7000215"):
        asyncio.run(cache.get(acr()))
    lines = [text for _, text in format_records(caplog.records)]
    assert any("AADSTS7000215" in line and "acr-prod" in line for line in lines)
    assert not any("sp~wrong-secret-for-the-log" in line or app.secret in line for line in lines)
    assert sample(metrics, "regcred_token_mints_total", registry="acr-prod", outcome="failure") == 1


# --- the CI API --------------------------------------------------------------------------


def test_the_ci_api_serves_an_acr_registry(azure: Azure) -> None:
    metrics = Metrics()
    config = ActiveRegistries(metrics)
    listed = f"{{id: acr-prod, url: {HOST}, type: acr, secretRef: acr-sp, exposeToCI: true}}"
    assert config.apply_text(f"registries:\n  - {listed}\n", "test")
    token, entry = create_token("ci-build", "ArtefactContributor")
    token_list = TokenList()
    assert token_list.apply_text(yaml.safe_dump({"tokens": [entry.model_dump(exclude_none=True, mode="json")]}), "test")
    cache = CredentialCache({"acr": AcrProvider()}, Material(material(azure.entra.service_principal())), metrics)
    with TestClient(create_ci_app(config, cache, token_list, metrics)) as client:
        answer = client.get("/registries/acr-prod/creds", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    [refresh] = azure.acr.issued
    expected = datetime.fromtimestamp(refresh["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert answer.json() == {"username": USERNAME, "password": refresh["refresh_token"], "expiresAt": expected}
