"""``regcred serve`` as users run it: a real TLS uvicorn listener, metrics, readiness, SIGTERM."""

from __future__ import annotations

import base64
import json
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tools
from webhook.certs import ensure_dev_certificate
from webhook.listeners import tls_listener_config
from webhook.protocol import BoundedHttpToolsProtocol
from webhook.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve")
    port, metrics_port = free_port(), free_port()
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--secrets-dir", str(EXAMPLES / "credentials"), "--dev-certs-dir", str(workdir / "certs"),
         "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port)],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"https://localhost:{port}"
    ca = workdir / "certs" / "ca.crt"
    deadline = time.monotonic() + 20
    while True:
        try:
            if ca.exists() and httpx.get(f"{base}/readyz",
                                         verify=ssl.create_default_context(cafile=str(ca))).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("regcred serve did not become ready:\n" + (workdir / "serve.log").read_text())
        time.sleep(0.1)
    yield {"base": base, "ca": ssl.create_default_context(cafile=str(ca)), "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
           "port": port, "metrics_port": metrics_port,
           "process": process, "log": workdir / "serve.log"}
    if process.poll() is None:
        process.kill()
        process.wait()


def test_the_example_review_is_patched_over_tls(server) -> None:
    review = json.loads((EXAMPLES / "admissionreview.json").read_text())
    answer = httpx.post(f"{server['base']}/mutate", json=review, verify=server["ca"])
    response = answer.json()["response"]
    assert answer.status_code == 200 and response["uid"] == review["request"]["uid"]
    assert json.loads(base64.b64decode(response["patch"])) == [{
        "op": "add", "path": "/spec/imagePullSecrets",
        "value": [{"name": "regcred-harbor-platform"}, {"name": "regcred-dockerhub-acme"}],
    }]


def test_health_and_readiness(server) -> None:
    assert httpx.get(f"{server['base']}/healthz", verify=server["ca"]).text == "ok\n"
    assert httpx.get(f"{server['base']}/readyz", verify=server["ca"]).status_code == 200


def test_plain_http_is_refused_on_the_admission_port(server) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(server["base"].replace("https", "http") + "/healthz")


def _exchange(server, listener: str, parts: list[bytes], endless: bytes = b"") -> tuple[bytes, int]:
    """Send each of ``parts`` on one connection to a listener and read its answer; after a part,
    ``endless`` over and over (up to 1 MiB) until the server answers. Returns everything the
    server sent back and the bytes we sent."""
    if listener == "admission":
        sock = server["ca"].wrap_socket(socket.create_connection(("127.0.0.1", server["port"])),
                                        server_hostname="localhost")
    else:
        sock = socket.create_connection(("127.0.0.1", server["metrics_port"]))
    sent, answer = 0, b""
    with sock:
        sock.settimeout(5)
        try:
            for number, part in enumerate(parts, 1):  # keep-alive: each request after the last answer
                sock.sendall(part)
                sent += len(part)
                while endless and sent < 2**20 and not (answer := _ready(sock)):
                    sock.sendall(endless)
                    sent += len(endless)
                while answer.count(b"HTTP/1.1 ") < number and (chunk := sock.recv(65536)):
                    answer += chunk
        except OSError:  # reset once it closed: what it answered was read before
            pass
    return answer, sent


def _ready(sock: socket.socket) -> bytes:
    """What the server has answered so far, without waiting (a TLS 1.3 session ticket makes the
    socket readable with no answer yet)."""
    if not select.select([sock], [], [], 0.01)[0]:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return b""
    finally:
        sock.settimeout(5)


def _get(path: str, header: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n"


@pytest.mark.parametrize("listener", ["admission", "metrics"])
@pytest.mark.parametrize(("parts", "endless", "statuses"), [
    pytest.param([b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "], b"a" * 4096, [431], id="endless-header"),
    pytest.param([b"GET /"], b"a" * 4096, [431], id="endless-url"),
    pytest.param([b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"], b"X-Many: v\r\n" * 400, [431],
                 id="endless-headers"),
    pytest.param([_get("/healthz", b"X-Big: " + b"a" * 12_000 + b"\r\n")], b"", [200], id="12k-header-is-fine"),
    pytest.param([_get("/healthz", b"X-Big: " + b"a" * 10_000 + b"\r\n")] * 2, b"", [200, 200],
                 id="bound-is-per-request"),
])
def test_a_request_head_is_bounded(server, listener, parts, endless, statuses) -> None:
    """h11 refused a head over 16 KiB; httptools has no bound of its own (webhook/protocol.py)."""
    if listener == "metrics":
        parts = [part.replace(b"/healthz", b"/metrics") for part in parts]
    answer, sent = _exchange(server, listener, parts, endless)
    assert [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)] == statuses
    if 431 in statuses:
        assert sent < 64 * 1024, "the server read far past the bound before answering"
        assert answer.endswith(b"request head over 16384 bytes\n")


def test_the_listener_speaks_the_bounded_httptools_protocol(tmp_path) -> None:
    """Named, not uvicorn's "auto": without httptools "auto" falls back to h11 silently, and a
    plain httptools protocol would have no bound on a request head."""
    files = ensure_dev_certificate(tmp_path, ["localhost"])
    config = tls_listener_config(lambda *_: None, 0, files, Settings(metrics_port=0))
    assert config.http_protocol_class is BoundedHttpToolsProtocol


def test_metrics_are_exposed_without_pod_or_namespace_labels(server) -> None:
    httpx.post(f"{server['base']}/mutate", json=json.loads((EXAMPLES / "admissionreview.json").read_text()),
               verify=server["ca"])
    text = httpx.get(server["metrics"]).text
    for name in ("regcred_admission_requests_total", "regcred_admission_duration_seconds_bucket",
                 "regcred_pull_secret_writes_total", "regcred_config_registries 3.0", "regcred_config_valid 1.0"):
        assert name in text
    assert "team-a" not in text and "acme/web" not in text
    assert 'regcred_pull_secret_writes_total{outcome="created",registry="dockerhub-acme"} 1.0' in text


def _readme_metrics() -> dict[str, dict[str, set[str] | None]]:
    """The README's metrics table: metric -> label -> listed values (None: an open label)."""
    section = (ROOT / "README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.findall(r"^\| `(regcred_\w+)` \| \w+ \| (.*?) \|", section, re.MULTILINE):
        name, cell = row
        labels = {}
        for part in re.split(r", (?=`)", cell) if cell.strip() else []:
            label, _, values = re.fullmatch(r"`(\w+)`(?: \(.*\))?(: (.+))?", part.strip()).groups()
            labels[label] = set(values.split(", ")) if values else None
        table[name] = labels
    return table


def test_the_readme_metrics_table_is_what_metrics_exposes(server) -> None:
    httpx.post(f"{server['base']}/mutate", json=json.loads((EXAMPLES / "admissionreview.json").read_text()),
               verify=server["ca"])
    text = httpx.get(server["metrics"]).text
    documented = _readme_metrics()
    exposed = dict(re.findall(r"^# TYPE (\S+) (\w+)$", text, re.MULTILINE))
    assert {name.removesuffix("_total") for name in documented} == {name.removesuffix("_total") for name in exposed}
    assert "_created" not in text
    seen: dict[tuple[str, str], set[str]] = {}
    for family, labels in re.findall(r"^(regcred_\w+?)(?:_bucket|_sum|_count)?\{(.*)\} ", text, re.MULTILINE):
        for label, value in re.findall(r'(\w+)="([^"]*)"', labels):
            if label != "le":
                seen.setdefault((family, label), set()).add(value)
    assert seen, "no labelled series exposed"
    for (family, label), values in seen.items():
        name = family if family in documented else family + "_total"
        listed = documented[name][label]
        assert listed is None or values <= listed, (name, label, values - listed)
    # Enumerated single labels are exposed in full from the start, so the sets must be equal.
    for name, label in (("regcred_admission_requests_total", "result"), ("regcred_admission_warnings_total", "reason")):
        assert seen[(name, label)] == documented[name][label]


def test_metrics_pass_promtool(server) -> None:
    require_tools("promtool")
    text = httpx.get(server["metrics"]).text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_logs_are_json_and_carry_no_credentials(server) -> None:
    lines = [line for line in server["log"].read_text().splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    passwords = [p.read_text() for p in EXAMPLES.glob("credentials/*/password")]
    assert not any(secret in line for secret in passwords for line in lines)


def test_sigterm_exits_cleanly(server) -> None:
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=25) == 0  # not killed by the signal: serve() handles it and drains


@pytest.mark.parametrize(("args", "code", "fragment"), [
    pytest.param(["check-config", str(EXAMPLES / "registries.yaml")], 0, "OK (3 registries)", id="check-ok"),
    pytest.param(["check-config", "BROKEN"], 1, "registries[0].url: must not contain a scheme", id="check-broken"),
    pytest.param(["check-config", "/nonexistent.yaml"], 2, "cannot read", id="check-missing-file"),
    pytest.param(["match", "--config", str(EXAMPLES / "registries.yaml"), "acme/web:1", "nginx", "Bad Ref"], 1,
                 "docker.io/acme/web", id="match"),
])
def test_cli(tmp_path, args, code, fragment) -> None:
    if "BROKEN" in args:
        broken = tmp_path / "broken.yaml"
        broken.write_text("registries:\n  - {id: x1, url: 'https://x.io', type: basic, secretRef: s}\n")
        args = [str(broken) if a == "BROKEN" else a for a in args]
    result = subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == code and fragment in result.stdout + result.stderr


def test_match_explains_each_image() -> None:
    result = subprocess.run([sys.executable, "-m", "webhook", "match", "--config", str(EXAMPLES / "registries.yaml"),
                             "acme/web:1", "nginx", "harbor.example.com/platform/x"], capture_output=True, text=True)
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["IMAGE", "NORMALIZED", "REGISTRY"],
        ["acme/web:1", "docker.io/acme/web", "dockerhub-acme"],
        ["nginx", "docker.io/library/nginx", "-"],
        ["harbor.example.com/platform/x", "harbor.example.com/platform/x", "harbor-platform"],
    ]
