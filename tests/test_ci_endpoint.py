"""The CI credentials endpoint over real TLS, its answers, bodies and audit lines: uvicorn serves
``create_ci_app`` on 127.0.0.1 with a certificate from a throwaway CA (trustme), and httpx calls
it trusting only that CA.

Registry list and token cache are the real ones; only the credential Provider (our own Protocol)
is faked, so the cache's single-flight and failure handling are exercised as in production.
Who gets in (brute force, the failure limiter, token comparison, CLI-made and reloaded
tokens) is in test_ci_endpoint_auth.py.
Every error body any test here receives goes to the suite's secret-hygiene check.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import trustme
import uvicorn
import yaml

from tests.support.fake_tokens import Clock
from tests.support.sensitive import observe_response
from webhook.activeregistries import ActiveRegistries
from webhook.ci.endpoint import create_ci_app
from webhook.ci.tokens import TokenList, create_token, hash_token
from webhook.credentialcache import CredentialCache
from webhook.logs import JsonFormatter
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable

REGISTRIES = """
registries:
  - {id: harbor, url: harbor.example.com, type: basic, secretRef: harbor-creds, exposeToCI: true}
  - {id: ecr-main, url: 123456789012.dkr.ecr.eu-west-1.amazonaws.com, type: ecr, exposeToCI: true}
  - {id: flaky, url: flaky.example.com, type: basic, secretRef: flaky-creds, exposeToCI: true}
  - {id: hidden, url: hidden.example.com, type: basic, secretRef: hidden-creds}
"""
HARBOR_PASSWORD = "harbor-pa55word-never-logged"
ECR_PASSWORD = "ecr-pa55word-never-logged"
ECR_EXPIRY = (datetime.now(UTC) + timedelta(hours=12)).replace(microsecond=654321)
# Service users by key: (name, role, registries scope).
USERS = {
    "contributor": ("ci-build", "ArtefactContributor", None),
    "admin": ("ops", "Administrator", None),
    "reader": ("auditor", "Reader", None),
    "scoped": ("team-a", "ArtefactContributor", ["ecr-main"]),
}


class FakeProvider:
    """Our Provider Protocol: answers by registry id; an exception stands for a failing source."""

    def __init__(self, answers: dict[str, Credential | Exception]):
        self.answers = answers

    def mint(self, registry, material):
        answer = self.answers[registry.id]
        if isinstance(answer, Exception):
            raise answer
        return answer


class NoMaterial:
    def read(self, name):
        return None


class Served:
    """``app`` under uvicorn over TLS in a background thread, plus optional background coroutines."""

    def __init__(self, app, tls: dict, background: tuple[Callable[[], Coroutine], ...] = ()):
        self._tls = tls
        self._background = background
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(
            app, ssl_certfile=tls["cert"], ssl_keyfile=tls["key"], log_config=None, access_log=False, lifespan="off",
        ))
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        tasks = [asyncio.create_task(start()) for start in self._background]
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            for task in tasks:
                task.cancel()

    def __enter__(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "uvicorn did not start"
            time.sleep(0.005)
        return self

    def __exit__(self, *_) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def client(self, source: str | None = None) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=self._tls["context"], local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=5,
                            event_hooks={"response": [observe_response]})


@pytest.fixture(scope="session")
def tls(tmp_path_factory) -> dict:
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("tls")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(directory / "tls.crt")
    leaf.private_key_pem.write_to_path(directory / "tls.key")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return {"cert": str(directory / "tls.crt"), "key": str(directory / "tls.key"), "context": context}


@pytest.fixture(scope="session")
def tokens() -> dict[str, str]:
    return {key: create_token(*user)[0] for key, user in USERS.items()}


def _token_text(tokens: dict[str, str]) -> str:
    entries = []
    for key, (name, role, scope) in USERS.items():
        entry = {"name": name, "role": role, "sha256": hash_token(tokens[key])}
        entries.append(entry | ({"registries": scope} if scope else {}))
    return yaml.safe_dump({"tokens": entries})


class Stack:
    """Everything the CI app needs, built the production way from YAML text."""

    def __init__(self, token_text: str = "tokens: []\n", *, load_registries: bool = True):
        self.metrics = Metrics()
        self.config = ActiveRegistries(self.metrics)
        if load_registries:
            assert self.config.apply_text(REGISTRIES, "test")
        provider = FakeProvider({
            "harbor": Credential("robot$ci", HARBOR_PASSWORD, None),
            "ecr-main": Credential("AWS", ECR_PASSWORD, ECR_EXPIRY),
            "flaky": CredentialUnavailable("flaky: registry answered HTTP 500"),
        })
        self.cache = CredentialCache(providers={"basic": provider, "ecr": provider}, material=NoMaterial(),
                                metrics=self.metrics)
        self.token_list = TokenList()
        assert self.token_list.apply_text(token_text, "test")
        self.clock = Clock(1000.0)

    def app(self, **limits):
        return create_ci_app(self.config, self.cache, self.token_list, self.metrics, clock=self.clock, **limits)

    def count(self, registry: str, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "regcred_ci_requests_total", {"registry": registry, "outcome": outcome})


def _auth(tokens: dict[str, str], who: str | None) -> dict[str, str]:
    """``who`` is a USERS key (that user's token), a literal Authorization value, or None (no header)."""
    if who is None:
        return {}
    return {"Authorization": f"Bearer {tokens[who]}" if who in tokens else who}


@pytest.fixture(scope="module")
def shared(tls, tokens):
    """One server for the tests that do not depend on fresh state; they compare metric deltas.

    The failure limit is raised so the table's many 401s never trip the rate limiter here.
    """
    stack = Stack(_token_text(tokens))
    with Served(stack.app(max_failures=10_000), tls) as served, served.client() as client:
        yield stack, client


# (who, path, status, outcome, metric registry label)
ANSWERS = [
    pytest.param("contributor", "/registries/harbor/creds", 200, "ok", "harbor", id="ok-no-expiry"),
    pytest.param("admin", "/registries/ecr-main/creds", 200, "ok", "ecr-main", id="ok-admin-expiring"),
    pytest.param("scoped", "/registries/ecr-main/creds", 200, "ok", "ecr-main", id="ok-in-scope"),
    pytest.param(None, "/registries/harbor/creds", 401, "unauthenticated", "harbor", id="missing-token"),
    pytest.param("Basic dXNlcjpwYXNz", "/registries/harbor/creds", 401, "unauthenticated", "harbor",
                 id="malformed-scheme"),
    pytest.param("Bearer", "/registries/harbor/creds", 401, "unauthenticated", "harbor", id="malformed-empty"),
    pytest.param("Bearer a b", "/registries/harbor/creds", 401, "unauthenticated", "harbor", id="malformed-two"),
    pytest.param("Bearer regcred_unknown", "/registries/harbor/creds", 401, "unauthenticated", "harbor",
                 id="unknown-token"),
    pytest.param(None, "/registries/nope/creds", 401, "unauthenticated", "unknown", id="401-before-404"),
    pytest.param("Bearer regcred_unknown", "/registries/hidden/creds", 401, "unauthenticated", "hidden",
                 id="401-before-not-exposed"),
    pytest.param("reader", "/registries/harbor/creds", 403, "forbidden_role", "harbor", id="wrong-role"),
    pytest.param("reader", "/registries/nope/creds", 403, "forbidden_role", "unknown", id="role-before-404"),
    pytest.param("scoped", "/registries/harbor/creds", 403, "forbidden_scope", "harbor", id="out-of-scope"),
    pytest.param("scoped", "/registries/nope/creds", 403, "forbidden_scope", "unknown", id="scope-before-404"),
    pytest.param("contributor", "/registries/nope/creds", 404, "not_found", "unknown", id="unknown-registry"),
    pytest.param("contributor", "/registries/hidden/creds", 403, "not_exposed", "hidden", id="not-exposed"),
    pytest.param("contributor", "/registries/flaky/creds", 503, "unavailable", "flaky", id="unavailable"),
    pytest.param("contributor", "/registries/harbor", 404, "no_route", "unknown", id="no-route"),
]


@pytest.mark.parametrize(("who", "path", "status", "outcome", "label"), ANSWERS)
def test_answers(shared, tokens, who, path, status, outcome, label):
    stack, client = shared
    before = stack.count(label, outcome) or 0
    response = client.get(path, headers=_auth(tokens, who))
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if status == 200:
        assert set(body) == {"username", "password", "expiresAt"}
    else:
        assert body["error"] == outcome and body["reason"]
        assert not {"username", "password"} & set(body)
    if status == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="regcred"')
    assert stack.count(label, outcome) == before + 1


def test_ok_bodies_carry_the_credential_and_an_rfc3339_expiry(shared, tokens):
    _, client = shared
    harbor = client.get("/registries/harbor/creds", headers=_auth(tokens, "contributor")).json()
    ecr = client.get("/registries/ecr-main/creds", headers=_auth(tokens, "contributor")).json()
    assert harbor == {"username": "robot$ci", "password": HARBOR_PASSWORD, "expiresAt": None}
    assert ecr["username"] == "AWS" and ecr["password"] == ECR_PASSWORD
    assert ecr["expiresAt"] == ECR_EXPIRY.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert datetime.fromisoformat(ecr["expiresAt"]) <= ECR_EXPIRY  # rounded down, never later


def test_unavailable_names_the_reason_and_asks_to_retry(shared, tokens):
    _, client = shared
    response = client.get("/registries/flaky/creds", headers=_auth(tokens, "contributor"))
    assert response.status_code == 503 and response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["error"] == "unavailable" and body["reason"].startswith("flaky: registry answered HTTP 500")


def test_without_a_registry_list_authenticated_callers_get_503(tls, tokens):
    stack = Stack(_token_text(tokens), load_registries=False)
    with Served(stack.app(), tls) as served, served.client() as client:
        assert client.get("/registries/harbor/creds").status_code == 401
        response = client.get("/registries/harbor/creds", headers=_auth(tokens, "contributor"))
    assert response.status_code == 503 and response.json()["error"] == "not_ready"


def test_a_bug_answers_500_without_material_and_still_audits(tls, tokens, caplog):
    class BrokenCache:
        async def get(self, registry):
            raise RuntimeError(f"boom {HARBOR_PASSWORD}")

    caplog.set_level(logging.DEBUG)
    stack = Stack(_token_text(tokens))
    app = create_ci_app(stack.config, BrokenCache(), stack.token_list, stack.metrics)
    with Served(app, tls) as served, served.client() as client:
        response = client.get("/registries/harbor/creds", headers=_auth(tokens, "contributor"))
    assert response.status_code == 500 and response.json() == {"error": "error", "reason": "internal error"}
    assert [r.outcome for r in caplog.records if r.name == "webhook.ciapi.audit"] == ["error"]
    assert all(HARBOR_PASSWORD not in JsonFormatter().format(r) for r in caplog.records)


def test_every_request_leaves_one_audit_line(shared, tokens, caplog):
    _, client = shared
    caplog.set_level(logging.INFO)
    client.get("/registries/harbor/creds", headers=_auth(tokens, "contributor"))
    client.get("/registries/hidden/creds", headers=_auth(tokens, "contributor"))
    client.get("/registries/harbor/creds", headers={"Authorization": "Bearer regcred_unknown"})
    client.get("/registries/harbor/creds", headers=_auth(tokens, "reader"))
    lines = [(r.token_name, r.registry, r.outcome, r.client)
             for r in caplog.records if r.name == "webhook.ciapi.audit"]
    assert lines == [
        ("ci-build", "harbor", "ok", "127.0.0.1"),
        ("ci-build", "hidden", "not_exposed", "127.0.0.1"),
        (None, "harbor", "unauthenticated", "127.0.0.1"),
        ("auditor", "harbor", "forbidden_role", "127.0.0.1"),
    ]


def test_no_token_or_password_in_any_log_line(shared, tokens, caplog):
    _, client = shared
    caplog.set_level(logging.DEBUG)
    for param in ANSWERS:
        who, path = param.values[0], param.values[1]
        client.get(path, headers=_auth(tokens, who))
    # A token pasted into the URL or sent the wrong way must not reach the log either.
    client.get(f"/registries/{tokens['admin']}/creds")
    client.get("/registries/harbor/creds", headers={"Authorization": f"Basic {tokens['admin']}"})
    client.get(f"/{tokens['admin']}")
    secrets_ = [*tokens.values(), HARBOR_PASSWORD, ECR_PASSWORD]
    audit = [r for r in caplog.records if r.name == "webhook.ciapi.audit"]
    assert len(audit) == len(ANSWERS) + 3
    # Every server-side logger counts. Not the client's (httpx logs the URL it was asked to get),
    # nor uvicorn's access log: access_log=False turns it off, as server.py does, but pytest hooks
    # its capture onto that non-propagating logger; it prints the raw path, which is caller input.
    skipped = ("httpx", "httpcore", "uvicorn.access")
    for record in caplog.records:
        if record.name.split(".")[0] in skipped or record.name in skipped:
            continue
        line = JsonFormatter().format(record)
        assert not [s for s in secrets_ if s in line], line
