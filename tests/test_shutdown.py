"""Graceful shutdown of ``regcred serve`` in cluster mode: the real process, the fake API server.

Admissions are held in flight through public behaviour: the fake API server answers the
Secret creates of new namespaces only after a delay, so each cold admission waits on its
write. SIGTERM then arrives with those admissions open. What must hold:

* every admission in flight is answered 200, allowed, with its patch and no warning;
* new connections are refused while they are still being answered;
* the process exits 0 (not killed by its own re-raised signal) within the Pod's grace period;
* the leader Lease is released on the way out, so another replica takes over at once.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.helmchart import values_file
from tests.support.kube import pod_review
from tests.test_serve import free_port

OWN = "regcred-system"
TEAMS = [f"team-{i}" for i in range(4)]
HOLD_SECONDS = 2.5  # how long each in-flight admission waits on its Secret write
# What the chart gives the process after SIGTERM: the grace period minus the preStop delay.
GRACE_PERIOD = values_file()["terminationGracePeriodSeconds"] - values_file()["shutdownDelaySeconds"]
FIGURES: dict[str, float] = {}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} not reached within {seconds}s")


@pytest.fixture
def api():
    with FakeApiServer() as server:
        for namespace in (OWN, *TEAMS):
            server.add_namespace(namespace)
        server.put_object("configmaps", {"metadata": {"name": "regcred-registries", "namespace": OWN}, "data": {
            "registries.yaml": "registries:\n  - {id: private, url: registry.example.com/team, type: basic,"
                               " secretRef: private-creds}\n"}})
        server.put_object("secrets", {"metadata": {"name": "private-creds", "namespace": OWN},
                                      "data": {"username": b64("puller"), "password": b64("shutdown-pass")}})
        yield server


@pytest.fixture
def regcred(api, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--kubeconfig", api.kubeconfig(str(tmp_path / "kubeconfig")),
         "--namespace", OWN, "--registries-configmap", "regcred-registries", "--admission-budget", "10",
         "--dev-certs-dir", str(tmp_path / "certs"), "--host", "127.0.0.1", "--port", str(port),
         # A second listener: uvicorn's per-server signal handling broke shutdown with several.
         "--metrics-port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    base = f"https://localhost:{port}"
    try:
        wait_for(lambda: (tmp_path / "certs" / "ca.crt").exists(), 20, "dev certificate")
        context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.crt"))
        wait_for(lambda: httpx.get(f"{base}/readyz", verify=context).status_code == 200, 20, "readiness")
        yield {"process": process, "base": base, "port": port, "context": context, "log": log}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def admit(regcred, namespace: str) -> httpx.Response:
    review = pod_review(namespace, "registry.example.com/team/app:1", uid=namespace)
    return httpx.post(f"{regcred['base']}/mutate", json=review, verify=regcred["context"], timeout=30)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def holder(api: FakeApiServer) -> str | None:
    lease = api.get_object("leases", OWN, "regcred")
    return None if lease is None else lease["spec"].get("holderIdentity")


def test_sigterm_drains_in_flight_admissions_refuses_new_ones_and_exits_zero(api, regcred) -> None:
    process = regcred["process"]
    wait_for(lambda: holder(api), 20, "leadership")
    hold = api.hang_next(len(TEAMS), seconds=HOLD_SECONDS, verb="create", resource="secrets")
    with ThreadPoolExecutor(len(TEAMS)) as pool:
        in_flight = [pool.submit(admit, regcred, namespace) for namespace in TEAMS]
        wait_for(lambda: hold.hits == len(TEAMS), 20, "every admission waiting on its write")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(regcred["port"]), 10, "new connections refused")
        FIGURES["refused_after_s"] = time.monotonic() - signalled
        assert not all(future.done() for future in in_flight), "stopped accepting only after the drain"
        answers = [future.result(timeout=30) for future in in_flight]
    assert process.wait(timeout=GRACE_PERIOD) == 0, regcred["log"].read_text()
    FIGURES["exit_after_s"] = time.monotonic() - signalled
    FIGURES["in_flight"] = len(answers)

    for answer in answers:
        response = answer.json()["response"]
        assert answer.status_code == 200 and response["allowed"] is True
        assert json.loads(base64.b64decode(response["patch"]))[0]["value"] == [{"name": "regcred-private"}]
        assert not response.get("warnings")
    assert all(api.get_object("secrets", team, "regcred-private") for team in TEAMS)
    assert holder(api) == ""  # released, so a successor need not wait out the lease
    lines = [json.loads(line) for line in regcred["log"].read_text().splitlines() if line.startswith("{")]
    messages = [line.get("msg") for line in lines]
    assert "shutting down" in messages and "leader lease released" in messages
    print(f"\nFIGURES shutdown: {FIGURES}")


def test_sigterm_when_idle_exits_zero(regcred) -> None:
    process = regcred["process"]
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=GRACE_PERIOD) == 0, regcred["log"].read_text()
    print(f"\nFIGURES idle shutdown: exit_after_s={time.monotonic() - signalled:.2f}")
