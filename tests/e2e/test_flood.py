"""A flood of 1,000 forged AdmissionReviews against ``regcred serve`` on a real control plane.

Every hostile kind the security review reproduced, at once: namespaces of ~3 MiB, names that
are no DNS label, namespaces that do not exist (each a new name), an opted-out namespace,
dry-run probes of a real one, and bodies sent half and then held. Afterwards: the server is
up, its peak RSS stayed under the chart's memory limit, the API requests it made are counted
from the API server's audit log and bounded, and Pods created through the API server still get
their Secrets. Bounds only, never durations: the machine running it may be slow.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from kubernetes import client as k8s

from tests.e2e.harness import OWN, SERVICE_ACCOUNT, ensure_namespace, eventually, pod
from tests.e2e.standalone import REGISTRY, installed_regcred, own_control_plane
from tests.support.controlplane import free_port
from tests.support.helmchart import values_file
from tests.support.kube import pod_review

MIB = 1024 * 1024
OPTED_OUT = {"regcred.io/inject": "disabled"}
# How many of each kind; 1,000 in all.
FLOOD = {"huge_namespace": 60, "invalid_namespace": 190, "missing_namespace": 300, "opted_out": 200,
         "dry_run_probe": 200, "slow_body": 50}
SENDERS = 24  # flood connections at once, besides the slow bodies: under --limit-concurrency
USER = f"system:serviceaccount:{OWN}:{SERVICE_ACCOUNT}"


def _memory_limit() -> int:
    limit = values_file()["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    return int(limit[:-2]) * MIB


def _review(kind: str, index: int) -> bytes:
    image = f"{REGISTRY}/app:1"
    if kind == "huge_namespace":  # just under the 3 MiB body limit, so it is decoded
        review = pod_review("n" * (3 * MIB - 4096), image, uid=f"h{index}")
        del review["request"]["object"]["metadata"]["namespace"]
        return json.dumps(review).encode()
    if kind == "invalid_namespace":
        return json.dumps(pod_review(("N" if index % 2 else "x" * 64) + str(index), image, uid=f"i{index}")).encode()
    if kind == "missing_namespace":
        return json.dumps(pod_review(f"ghost-{index}", image, uid=f"m{index}")).encode()
    review = pod_review("quiet" if kind == "opted_out" else "team-a", image, uid=f"{kind[0]}{index}")
    review["request"]["dryRun"] = kind == "dry_run_probe"
    return json.dumps(review).encode()


def _half_sent(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    sock.sendall(f"POST /mutate HTTP/1.1\r\nHost: regcred\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {3 * MIB}\r\n\r\n".encode() + b'{"apiVersion": "' + b"x" * MIB)
    return sock


def _status_of(sock: ssl.SSLSocket) -> int:
    sock.settimeout(60)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (OSError, ssl.SSLError):
        pass
    sock.close()
    return int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else 0


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields[name].split()[0]) * 1024


def _peak_rss(pid: int) -> int:
    return _status_field(pid, "VmHWM")


def _rss(pid: int) -> int:
    return _status_field(pid, "VmRSS")


def _regcred_requests(plane) -> Counter:
    """regcred's API requests so far, by (verb, resource, whether in a forged namespace)."""
    counted = Counter()
    for event in plane.audit_events():
        if event.get("user", {}).get("username") != USER:
            continue
        ref = event.get("objectRef") or {}
        place = ref.get("namespace") or ref.get("name") or ""
        forged = place.startswith("ghost-") or place == "quiet"
        counted[(event["verb"], ref.get("resource", ""), "forged" if forged else "")] += 1
    return counted


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    plane = own_control_plane(tmp_path_factory.mktemp("flood-plane"))
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def regcred(control_plane, tmp_path_factory):
    with installed_regcred(control_plane, tmp_path_factory.mktemp("flood"), free_port()) as running:
        yield running


def test_a_flood_of_forged_reviews_leaves_regcred_up_bounded_and_serving(regcred, control_plane):
    process, admin = regcred
    core = k8s.CoreV1Api(admin)
    ensure_namespace(admin, "team-a")
    ensure_namespace(admin, "quiet", OPTED_OUT)
    eventually(lambda: core.create_namespaced_pod("team-a", pod("before-", f"{REGISTRY}/app:1")).spec
               .image_pull_secrets, what="a patched Pod before the flood")
    before, rss_before = _regcred_requests(control_plane), _rss(process.process.pid)
    started = time.monotonic()  # reported, never asserted
    context = process.ssl_context()

    slow = [_half_sent(process.port, context) for _ in range(FLOOD["slow_body"])]
    kinds = [kind for kind, count in FLOOD.items() if kind != "slow_body" for _ in range(count)]
    local = threading.local()

    def send(numbered: tuple[int, str]) -> tuple[str, int]:
        index, kind = numbered
        if not hasattr(local, "client"):
            local.client = httpx.Client(verify=context, timeout=60)
        answer = local.client.post(f"{process.base}/mutate", content=_review(kind, index),
                                   headers={"content-type": "application/json"})
        return kind, answer.status_code

    with ThreadPoolExecutor(SENDERS) as pool:
        answers = Counter(pool.map(send, enumerate(kinds)))
    slow_answers = Counter(_status_of(sock) for sock in slow)
    seconds = time.monotonic() - started

    # Genuine Pods in a namespace created after the flood get their Secret.
    ensure_namespace(admin, "team-b")
    genuine = [core.create_namespaced_pod("team-b", pod("after-", f"{REGISTRY}/app:1")) for _ in range(5)]
    during = _regcred_requests(control_plane) - before
    peak, limit = _peak_rss(process.process.pid), _memory_limit()
    figures = {"answers": {f"{kind} {status}": n for (kind, status), n in sorted(answers.items())},
               "slow bodies": dict(slow_answers), "seconds": round(seconds, 1),
               "RSS before MiB": round(rss_before / MIB, 1), "peak RSS MiB": round(peak / MIB, 1),
               "regcred API requests": {" ".join(filter(None, key)): n for key, n in sorted(during.items())}}
    print("flood figures:", json.dumps(figures, indent=1))

    assert process.process.poll() is None
    assert httpx.get(f"{process.base}/healthz", verify=context).text == "ok\n"
    assert peak < limit
    assert answers[("huge_namespace", 400)] == FLOOD["huge_namespace"]
    assert answers[("invalid_namespace", 400)] == FLOOD["invalid_namespace"]
    assert answers[("missing_namespace", 200)] == FLOOD["missing_namespace"]
    assert answers[("opted_out", 200)] == FLOOD["opted_out"]
    assert answers[("dry_run_probe", 200)] == FLOOD["dry_run_probe"]
    assert slow_answers == {408: FLOOD["slow_body"]}
    # No write into a namespace that does not exist or opted out; at most one read per name.
    assert not any(verb != "get" for verb, _, forged in during.elements() if forged)
    assert during[("get", "namespaces", "forged")] <= FLOOD["missing_namespace"]
    assert sum(during.values()) <= FLOOD["missing_namespace"] + 20  # plus team-b's Secret and a few reads
    assert all(made.spec.image_pull_secrets[0].name == "regcred-private" for made in genuine)
    assert core.read_namespaced_secret("regcred-private", "team-b").type == "kubernetes.io/dockerconfigjson"
    assert process.metric("regcred_admission_requests_total", result="no_namespace") == FLOOD["missing_namespace"]
