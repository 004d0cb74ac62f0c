"""Who gets into the CI credentials endpoint: brute force against the failed-authentication
limiter, token comparison on hashes with ``hmac.compare_digest``, tokens made with the CLI, and
revocation by reloading the token list.

The servers, stacks and fixtures are test_ci_endpoint.py's (uvicorn over TLS, real registry list
and token cache, a fake clock driving the limiter).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.support.fake_tokens import Clock
from tests.support.sensitive import observe_response
from tests.test_ci_endpoint import (  # noqa: F401
    HARBOR_PASSWORD,
    Served,
    Stack,
    _auth,
    _token_text,
    tls,
    tokens,
)
from webhook import filewatch
from webhook.ci import tokens as ci_tokens
from webhook.ci.command import add_ci_token_parser, run_ci_token
from webhook.ci.endpoint import FailureLimiter
from webhook.ci.tokens import TokenList, create_token, entry_yaml

PATH = "/registries/harbor/creds"
GUESS = {"Authorization": "Bearer regcred_guess"}


def test_repeated_failures_are_rate_limited_per_address_and_recover(tls, tokens):
    stack = Stack(_token_text(tokens))
    good, bad = _auth(tokens, "contributor"), {"Authorization": "Bearer regcred_guess"}
    path = "/registries/harbor/creds"
    with Served(stack.app(max_failures=3, window_seconds=60), tls) as served, served.client() as client:
        assert [client.get(path, headers=bad).status_code for _ in range(3)] == [401, 401, 401]
        limited = client.get(path, headers=bad)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
        assert limited.headers["cache-control"] == "no-store" and limited.json()["error"] == "rate_limited"
        # A valid token from the blocked address still gets in: pipelines behind one Ingress
        # share an address, and one bad job must not lock out the rest.
        assert client.get(path, headers=good).status_code == 200
        with served.client(source="127.0.0.2") as other:
            assert other.get(path, headers=good).status_code == 200
        stack.clock.now += 30
        assert client.get(path, headers=bad).headers["retry-after"] == "30"
        stack.clock.now += 30.5
        assert client.get(path, headers=bad).status_code == 401
    assert stack.count("harbor", "rate_limited") == 2


def test_the_limiter_tracks_a_bounded_number_of_addresses():
    clock = Clock(1000.0)
    limiter = FailureLimiter(max_failures=2, window_seconds=10, max_clients=3, clock=clock)
    for index in range(10):
        limiter.failed(f"10.0.0.{index}")
    assert len(limiter) == 3
    for address in ("2001:db8::1", "2001:db8::2"):  # one host's /64 counts as one client
        limiter.failed(address)
    assert limiter.retry_after("2001:db8::ffff") == 10 and limiter.retry_after("2001:db8:0:1::1") is None
    limiter.failed("::ffff:192.0.2.1")
    limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 10




def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="regcred")
    add_ci_token_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["ci-token", "create", *argv])


def test_a_token_made_with_the_cli_and_stored_fetches_credentials(tls, tmp_path, capsys):
    assert run_ci_token(_cli(["--name", "release-bot", "--registries", "harbor"])) == 0
    token, _, entry = capsys.readouterr().out.partition("\n")
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n" + entry)
    stack = Stack()
    assert stack.token_list.apply_file(path)
    with Served(stack.app(), tls) as served, served.client() as client:
        headers = {"Authorization": f"Bearer {token}"}
        ok = client.get("/registries/harbor/creds", headers=headers)
        scoped_out = client.get("/registries/ecr-main/creds", headers=headers)
    assert ok.status_code == 200 and ok.json()["password"] == HARBOR_PASSWORD
    assert scoped_out.status_code == 403


def test_token_list_hot_reload_over_tls(tls, tmp_path):
    old, new = create_token("old-bot"), create_token("new-bot")
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n" + entry_yaml(old[1]))
    stack = Stack()

    def watch():
        return filewatch.watch([path], lambda: stack.token_list.apply_file(path), interval=0.01, call_now=True)

    with Served(stack.app(), tls, background=(watch,)) as served, served.client() as client:
        def status(token: str) -> int:
            return client.get("/registries/harbor/creds", headers={"Authorization": f"Bearer {token}"}).status_code

        _wait(lambda: stack.token_list.find(old[0]) is not None)
        assert status(old[0]) == 200
        _replace(path, "tokens:\n" + entry_yaml(new[1]))
        _wait(lambda: stack.token_list.find(new[0]) is not None)
        assert status(new[0]) == 200
        assert status(old[0]) == 401  # revoked by removing its entry
        _replace(path, "tokens: [broken\n")
        _wait(lambda: bool(stack.token_list.errors))
        assert status(new[0]) == 200  # a broken list keeps the last good one


def _replace(path: Path, text: str) -> None:
    staging = path.with_suffix(".new")
    staging.write_text(text)
    os.replace(staging, path)  # atomic, like the kubelet's ..data symlink swap


def _wait(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)




# --- brute force: figures under the default limits (10 failures per 60 s per address) ----


def test_a_brute_force_run_gets_ten_answers_then_429_until_its_window_ends(tls, tokens):
    stack = Stack(_token_text(tokens))
    with Served(stack.app(), tls) as served, served.client() as client:
        statuses = [client.get(PATH, headers=GUESS).status_code for _ in range(100)]
        assert statuses == [401] * 10 + [429] * 90
        # The right token is served throughout (a shared address must not lock out CI);
        # guessing on does not extend the block.
        assert client.get(PATH, headers=_auth(tokens, "contributor")).status_code == 200
        stack.clock.now += 59
        blocked = client.get(PATH, headers=GUESS)
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "1"
        stack.clock.now += 1
        assert client.get(PATH, headers=GUESS).status_code == 401
    assert stack.count("harbor", "unauthenticated") == 11
    assert stack.count("harbor", "rate_limited") == 91


@pytest.mark.parametrize(
    ("max_failures", "every", "expected_401"),
    [
        pytest.param(10, 1.0, 100, id="defaults-one-guess-a-second"),
        pytest.param(3, 1.0, 30, id="three-per-window"),
        # One guess every 10 s never reaches 10 failures within a window: never blocked.
        pytest.param(10, 10.0, 60, id="slow-guesser-never-blocked"),
    ],
)
def test_sustained_guessing_is_held_to_max_failures_per_window(tokens, max_failures, every, expected_401):
    stack = Stack(_token_text(tokens))
    answers: list[int] = []
    with TestClient(stack.app(max_failures=max_failures, window_seconds=60)) as client:
        client.event_hooks = {"request": [], "response": [observe_response]}
        start = stack.clock.now
        while stack.clock.now < start + 600:  # ten minutes of the limiter's clock
            answers.append(client.get(PATH, headers=GUESS).status_code)
            stack.clock.now += every
    assert answers.count(401) == expected_401 and answers.count(401) + answers.count(429) == len(answers)


# --- token comparison -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        pytest.param(0, None, id="empty-list"),
        pytest.param(1, 0, id="only-entry"),
        pytest.param(5, 0, id="first-of-five"),
        pytest.param(5, 4, id="last-of-five"),
        pytest.param(5, None, id="none-of-five"),
    ],
)
def test_every_entry_is_compared_on_hashes_with_compare_digest(monkeypatch, entries, match):
    made = [create_token(f"user-{index}") for index in range(entries)]
    token_list = TokenList()
    assert token_list.apply_text("tokens:\n" + "".join(entry_yaml(entry) for _, entry in made) if made
                                 else "tokens: []\n", "test")
    presented = made[match][0] if match is not None else "regcred_not-a-token"
    calls: list[tuple[str, str]] = []
    compare = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(ci_tokens.hmac, "compare_digest", spy)
    found = token_list.find(presented)
    assert found == (made[match][1] if match is not None else None)
    # Every entry, whatever matched (no early exit), and only digests: never the token itself.
    digest = hashlib.sha256(presented.encode()).hexdigest()
    assert calls == [(digest, entry.sha256) for _, entry in made]
