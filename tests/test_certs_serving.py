"""The serving certificate is checked for what the API server checks: its validity period and
its names. The review found an expired or wrong-name certificate accepted and /readyz green
while the API server skipped the webhook; now both are refused at load and on reload, the
notAfter in use is a gauge (``regcred_tls_cert_expiry_timestamp_seconds``), and /readyz drops
once the certificate in use expires unreplaced.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509

from tests.test_reload import context_for, wait_until
from tests.test_serve import EXAMPLES, free_port
from webhook.certs import check_serving

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
CA = trustme.CA()


def leaf(*names: str, ca: trustme.CA = CA, not_before: dt.datetime = NOW - DAY,
         not_after: dt.datetime = NOW + 30 * DAY) -> trustme.LeafCert:
    return ca.issue_cert(*names, not_before=not_before, not_after=not_after)


def write(directory: Path, cert: trustme.LeafCert) -> Path:
    """The pair under ``directory``, renamed into place as a Secret volume's swap does."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in (("tls.crt", cert.cert_chain_pems[0].bytes()), ("tls.key", cert.private_key_pem.bytes())):
        (directory / f".{name}.new").write_bytes(blob)
        (directory / f".{name}.new").rename(directory / name)
    return directory / "tls.crt"


SERVICE = "regcred.regcred-system.svc"


@pytest.mark.parametrize(("cert", "names", "refusal"), [
    pytest.param(lambda: leaf(SERVICE), (SERVICE,), None, id="valid-for-the-service"),
    pytest.param(lambda: leaf(SERVICE.upper() + "."), (SERVICE,), None, id="case-and-trailing-dot"),
    pytest.param(lambda: leaf("*.regcred-system.svc"), (SERVICE,), None, id="wildcard"),
    pytest.param(lambda: leaf("127.0.0.1"), ("127.0.0.1",), None, id="ip-address"),
    pytest.param(lambda: leaf(SERVICE), (), None, id="no-names-required"),
    pytest.param(lambda: leaf(SERVICE, not_after=NOW - DAY, not_before=NOW - 30 * DAY), (SERVICE,),
                 "is not valid now", id="expired"),
    pytest.param(lambda: leaf(SERVICE, not_before=NOW + DAY, not_after=NOW + 30 * DAY), (SERVICE,),
                 "is not valid now", id="not-yet-valid"),
    pytest.param(lambda: leaf("other.regcred-system.svc"), (SERVICE,), f"does not cover {SERVICE}", id="wrong-name"),
    pytest.param(lambda: leaf("*.svc"), (SERVICE,), f"does not cover {SERVICE}", id="wildcard-spans-one-label-only"),
    pytest.param(lambda: leaf("127.0.0.2"), ("127.0.0.1",), "does not cover 127.0.0.1", id="other-ip"),
    pytest.param(lambda: leaf(SERVICE), (SERVICE, "regcred.regcred-system.svc.cluster.local"),
                 "does not cover regcred.regcred-system.svc.cluster.local", id="one-of-two-names-missing"),
])
def test_check_serving(tmp_path, cert, names, refusal):
    issued = cert()
    path = write(tmp_path, issued)
    if refusal is None:
        not_after = check_serving(path, names)
        assert abs((not_after - issued_not_after(path)).total_seconds()) < 1
    else:
        with pytest.raises(ValueError, match=re.escape(refusal)):
            check_serving(path, names)


def issued_not_after(path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, int, int, Path]:
    port, metrics, log = free_port(), free_port(), tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--secrets-dir", str(EXAMPLES / "credentials"), "--tls-cert", str(tmp_path / "tls" / "tls.crt"),
         "--tls-key", str(tmp_path / "tls" / "tls.key"), "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics), "--file-poll-interval", "0.2", *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    return process, port, metrics, log


@pytest.mark.parametrize(("cert", "names", "reason"), [
    pytest.param(lambda: leaf("localhost", not_after=NOW - DAY, not_before=NOW - 30 * DAY), "localhost",
                 "is not valid now", id="expired"),
    pytest.param(lambda: leaf("localhost"), SERVICE, f"does not cover {SERVICE}", id="wrong-name"),
])
def test_serve_refuses_to_start_on_a_certificate_the_api_server_would_refuse(tmp_path, cert, names, reason):
    write(tmp_path / "tls", cert())
    process, *_rest, log = serve(tmp_path, "--tls-names", names)
    assert process.wait(timeout=30) == 2
    assert reason in log.read_text()


def expiry_gauge(metrics: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    (value,) = re.findall(r"^regcred_tls_cert_expiry_timestamp_seconds (\S+)$", text, re.MULTILINE)
    return float(value)


def test_a_rotated_certificate_is_checked_and_the_gauge_follows_the_one_in_use(tmp_path):
    first, second = trustme.CA(), trustme.CA()
    served = write(tmp_path / "tls", leaf("localhost", ca=first, not_after=NOW + 10 * DAY))
    process, port, metrics, log = serve(tmp_path, "--tls-names", "localhost")
    base = f"https://localhost:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", verify=context_for(first)).status_code == 200)
        assert expiry_gauge(metrics) == issued_not_after(served).timestamp()
        for refused in (leaf("localhost", ca=second, not_after=NOW - DAY, not_before=NOW - 30 * DAY),
                        leaf("elsewhere.example", ca=second)):
            write(tmp_path / "tls", refused)
            wait_until(lambda: log.read_text().count("rotated TLS certificate is unusable") >= 1)
            time.sleep(0.5)
            assert httpx.get(f"{base}/readyz", verify=context_for(first)).status_code == 200  # the old one
            assert expiry_gauge(metrics) == (NOW + 10 * DAY).timestamp()
        assert log.read_text().count("rotated TLS certificate is unusable") == 2
        write(tmp_path / "tls", leaf("localhost", ca=second, not_after=NOW + 20 * DAY))
        wait_until(lambda: httpx.get(f"{base}/healthz", verify=context_for(second)).status_code == 200)
        assert expiry_gauge(metrics) == (NOW + 20 * DAY).timestamp()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_readiness_drops_when_the_certificate_in_use_expires(tmp_path):
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    write(tmp_path / "tls", leaf("localhost", not_after=soon))
    process, port, _metrics, log = serve(tmp_path, "--tls-names", "localhost")
    # The certificate expires during the test: only the status is looked at, not its validity.
    blind = ssl.create_default_context()
    blind.check_hostname, blind.verify_mode = False, ssl.CERT_NONE
    try:
        wait_until(lambda: httpx.get(f"https://localhost:{port}/readyz", verify=blind).status_code == 200)
        wait_until(lambda: httpx.get(f"https://localhost:{port}/readyz", verify=blind).status_code == 503, timeout=20)
        assert "the TLS certificate in use has expired" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)
