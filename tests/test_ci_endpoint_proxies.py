"""Who the CI API believes a caller is, as ``regcred serve`` runs it.

Two reproductions of the security review, run against the real listener:
- from loopback (a port-forward, a sidecar), a rotating ``X-Forwarded-For`` used to give every
  guess a fresh address, so the failure limiter never engaged and the audit log recorded the
  spoofed addresses. Now no listener believes the header unless ``--ci-trusted-proxies``
  names the peer;
- behind a trusted proxy (an Ingress) every pipeline shares one peer address: the forwarded
  address is what the limiter counts, and a valid token is never refused.
Audit lines are written at ``--log-level warning`` too.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sensitive import register
from tests.test_serve import EXAMPLES, free_port
from webhook.ci.tokens import create_token, entry_yaml

PATH = "/registries/harbor-platform/creds"
GUESS = {"Authorization": "Bearer regcred_not-a-token"}


@contextlib.contextmanager
def ci_api(tmp_path: Path, *extra: str) -> Iterator[tuple[httpx.Client, dict[str, str], Path]]:
    """``regcred serve`` with the CI API at --log-level warning: a client, a valid token's header, the log."""
    token, entry = create_token("release-pipeline")
    register(token, "CI token of test_ci_endpoint_proxies")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n" + "".join("  " + line + "\n" for line in entry_yaml(entry).splitlines()))
    ci_port, log = free_port(), tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--secrets-dir", str(EXAMPLES / "credentials"), "--dev-certs-dir", str(tmp_path / "certs"),
         "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0", "--log-level", "warning",
         "--ci-port", str(ci_port), "--ci-tokens", str(tokens), *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "certs" / "ca.crt").exists():
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.05)
        context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        with httpx.Client(base_url=f"https://localhost:{ci_port}", verify=context, timeout=5) as client:
            while True:
                try:
                    client.get("/")
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                    time.sleep(0.1)
            yield client, {"Authorization": f"Bearer {token}"}, log
    finally:
        process.terminate()
        process.wait(timeout=20)


def audit_lines(log: Path) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "webhook.ciapi.audit" and line["registry"] != "unknown"]


def forwarded(address: str, headers: dict[str, str] = GUESS) -> dict[str, str]:
    return {**headers, "X-Forwarded-For": address}


def test_a_rotating_forwarded_for_from_loopback_is_not_believed(tmp_path):
    with ci_api(tmp_path) as (client, good, log):
        statuses = [client.get(PATH, headers=forwarded(f"198.51.100.{n}")).status_code for n in range(12)]
        assert statuses == [401] * 10 + [429] * 2
        assert client.get(PATH, headers=forwarded("198.51.100.99", good)).status_code == 200
    lines = audit_lines(log)
    assert len(lines) == 13 and {line["client"] for line in lines} == {"127.0.0.1"}
    assert [line["outcome"] for line in lines][-1] == "ok"  # served at --log-level warning, and audited


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_and_a_valid_token_always_passes(tmp_path):
    with ci_api(tmp_path, "--ci-trusted-proxies", "127.0.0.0/8") as (client, good, log):
        guesser, pipeline = "203.0.113.7", "203.0.113.8"
        statuses = [client.get(PATH, headers=forwarded(guesser)).status_code for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        assert client.get(PATH, headers=forwarded(pipeline)).status_code == 401  # its own count
        assert client.get(PATH, headers=forwarded(pipeline, good)).status_code == 200
        # Even the throttled address: a valid token is never refused by the limiter.
        assert client.get(PATH, headers=forwarded(guesser, good)).status_code == 200
    lines = audit_lines(log)
    assert [line["client"] for line in lines] == [guesser] * 11 + [pipeline] * 2 + [guesser]
    assert [line["outcome"] for line in lines][-2:] == ["ok", "ok"]


@pytest.mark.parametrize("value", [
    pytest.param("10.0.0.0/33", id="prefix-too-long"),
    pytest.param("ingress.example", id="a-name"),
])
def test_trusted_proxies_must_be_cidrs(value):
    ran = subprocess.run([sys.executable, "-m", "webhook", "serve", "--ci-trusted-proxies", value, "--port", "1"],
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode != 0 and "--ci-trusted-proxies" in ran.stderr
