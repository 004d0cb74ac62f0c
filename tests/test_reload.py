"""Files change under a running ``regcred serve``: certificate rotation, registry list, credentials."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.test_serve import EXAMPLES, free_port

REVIEW = json.loads((EXAMPLES / "admissionreview.json").read_text())


def write_pair(ca: trustme.CA, directory: Path) -> None:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    # Write to temporary names and rename, as a Secret volume's atomic symlink swap does.
    for name, blob in (("tls.crt", cert.cert_chain_pems[0].bytes()), ("tls.key", cert.private_key_pem.bytes())):
        (directory / f".{name}.new").write_bytes(blob)
        (directory / f".{name}.new").rename(directory / name)


def context_for(*cas: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        ca.configure_trust(context)
    return context


@pytest.fixture
def running(tmp_path):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    tls = tmp_path / "tls"
    tls.mkdir()
    write_pair(old_ca, tls)
    config = tmp_path / "registries.yaml"
    shutil.copy(EXAMPLES / "registries.yaml", config)
    secrets = tmp_path / "credentials"
    shutil.copytree(EXAMPLES / "credentials", secrets)
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(config), "--secrets-dir", str(secrets),
         "--tls-cert", str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key"), "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", str(metrics_port), "--file-poll-interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"),
    )
    base = f"https://localhost:{port}"
    wait_until(lambda: httpx.get(f"{base}/readyz", verify=context_for(old_ca)).status_code == 200)
    yield {"base": base, "old": old_ca, "new": new_ca, "tls": tls, "config": config, "secrets": secrets,
           "log": tmp_path / "log", "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    process.terminate()
    process.wait(timeout=20)


def wait_until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail("condition not reached in time")


def test_certificate_rotation_under_load_drops_no_request(running) -> None:
    failures, successes, stop = [], [], threading.Event()

    def load() -> None:
        with httpx.Client(verify=context_for(running["old"], running["new"])) as client:
            while not stop.is_set():
                try:
                    answer = client.post(f"{running['base']}/mutate", json=REVIEW)
                    (successes if answer.status_code == 200 else failures).append(answer.status_code)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    write_pair(running["new"], running["tls"])
    # A client trusting only the new CA proves the new certificate is being served.
    wait_until(lambda: httpx.get(f"{running['base']}/healthz", verify=context_for(running["new"])).status_code == 200)
    time.sleep(0.3)
    stop.set()
    for worker in workers:
        worker.join()
    assert failures == [] and len(successes) > 20


def test_a_broken_rotated_certificate_keeps_the_old_one(running) -> None:
    (running["tls"] / "tls.crt").write_text("not a certificate")
    # Waited for, not slept on: a watcher that never looked would pass a fixed sleep too.
    wait_until(lambda: "rotated TLS certificate is unusable" in running["log"].read_text())
    assert httpx.get(f"{running['base']}/healthz", verify=context_for(running["old"])).status_code == 200


@pytest.mark.parametrize(("version", "accepted"), [
    pytest.param(ssl.TLSVersion.TLSv1_1, False, id="tls1.1-refused"),
    pytest.param(ssl.TLSVersion.TLSv1_2, True, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, True, id="tls1.3"),
])
def test_only_tls_1_2_and_newer(running, version, accepted) -> None:
    context = context_for(running["old"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 on purpose
        context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")  # let the client even try
    try:
        ok = httpx.get(f"{running['base']}/healthz", verify=context).status_code == 200
    except (httpx.HTTPError, ssl.SSLError):
        ok = False
    assert ok == accepted


def _patched_names(base: str, ca: trustme.CA) -> list[str]:
    response = httpx.post(f"{base}/mutate", json=REVIEW, verify=context_for(ca)).json()["response"]
    if "patch" not in response:
        return []
    return [entry["name"] for op in json.loads(base64.b64decode(response["patch"])) for entry in op["value"]]


def _reloads(running, outcome: str) -> float:
    text = httpx.get(running["metrics"]).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "regcred_config_reloads_total" and sample.labels.get("outcome") == outcome)


def test_registry_list_changes_apply_and_broken_ones_are_ignored(running) -> None:
    base, ca, config = running["base"], running["old"], running["config"]
    assert _patched_names(base, ca) == ["regcred-harbor-platform", "regcred-dockerhub-acme"]
    config.write_text(config.read_text().replace("url: docker.io/acme", "url: docker.io/other"))
    wait_until(lambda: _patched_names(base, ca) == ["regcred-harbor-platform"])
    rejected = _reloads(running, "rejected")
    config.write_text("registries: [broken\n")
    wait_until(lambda: _reloads(running, "rejected") > rejected)  # the watcher read it, and refused it
    assert _patched_names(base, ca) == ["regcred-harbor-platform"]  # last good list kept
    assert httpx.get(f"{base}/readyz", verify=context_for(ca)).status_code == 200
