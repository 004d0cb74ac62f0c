"""The CI credentials API as users run it: ``regcred serve --ci-port --ci-tokens``, token from the CLI."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.sensitive import observe_response, register
from tests.test_serve import EXAMPLES, free_port


def test_a_token_made_with_the_cli_fetches_exposed_credentials(tmp_path) -> None:
    created = subprocess.run([sys.executable, "-m", "webhook", "ci-token", "create", "--name", "release-pipeline"],
                             capture_output=True, text=True, check=True)
    token, entry = created.stdout.split("\n", 1)
    register(token.strip(), "CI token made by regcred ci-token create")  # in a subprocess: not seen by the fixtures
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join("  " + line + "\n" for line in entry.strip().splitlines()))
    port, ci_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--secrets-dir", str(EXAMPLES / "credentials"), "--dev-certs-dir", str(tmp_path / "certs"),
         "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
         "--ci-port", str(ci_port), "--ci-tokens", str(tokens)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    try:
        base = f"https://localhost:{ci_port}"
        headers = {"Authorization": f"Bearer {token.strip()}"}
        deadline = time.monotonic() + 20
        while not (tmp_path / "certs" / "ca.crt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{base}/registries/harbor-platform/creds", headers=headers, verify=context)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, log.read_text()
        assert answer.json() == {"username": "robot$platform", "password": "example-not-a-real-token",
                                 "expiresAt": None}
        assert answer.headers["cache-control"] == "no-store"
        not_exposed = httpx.get(f"{base}/registries/dockerhub-acme/creds", headers=headers, verify=context)
        assert not_exposed.status_code == 403
        unauthenticated = httpx.get(f"{base}/registries/harbor-platform/creds", verify=context)
        assert unauthenticated.status_code == 401
        for refused in (not_exposed, unauthenticated):
            observe_response(refused)  # error bodies go to the suite's secret-hygiene check
        with pytest.raises(httpx.HTTPError):  # the admission port does not serve the CI API
            httpx.get(f"https://localhost:{port}/registries/harbor-platform/creds", headers=headers,
                      verify=context).raise_for_status()
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert token.strip() not in log.read_text() and "example-not-a-real-token" not in log.read_text()


@pytest.mark.parametrize(("content", "reason"), [
    pytest.param(None, "cannot read", id="missing"),
    pytest.param("- name: deploy\n", "top level must be a mapping", id="an-entry-not-a-list"),
    pytest.param("tokens: []\ntokens: []\n", "duplicate key 'tokens'", id="duplicate-key"),
])
def test_an_unusable_tokens_file_stops_start_up(tmp_path, content, reason) -> None:
    tokens = tmp_path / "tokens.yaml"
    if content is not None:
        tokens.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--dev-certs-dir", str(tmp_path / "certs"), "--host", "127.0.0.1", "--port", str(free_port()),
         "--metrics-port", "0", "--ci-port", str(free_port()), "--ci-tokens", str(tokens)],
        capture_output=True, text=True, timeout=30, cwd=EXAMPLES.parent,
    )
    assert result.returncode == 2
    [stop] = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert str(tokens) in stop and reason in stop and "regcred ci-token check" in stop
