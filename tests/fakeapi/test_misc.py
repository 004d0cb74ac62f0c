"""The fake API server's lesser features (generateName, dry run, preconditions, direct store
access, kubeconfig, discovery) and many clients at once, driven by the real client."""

from __future__ import annotations

import asyncio
import resource
import ssl
from concurrent.futures import ThreadPoolExecutor

import kubernetes
import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fakes.apiserver_errors import ApiError
from tests.support.fakeapi import NS, names, secret
from tests.support.kube import b64


def test_generate_name_dry_run_and_auto_created_namespaces(server, core):
    generated = core.create_namespaced_secret(NS, {"metadata": {"generateName": "pull-"}})
    assert generated.metadata.name.startswith("pull-") and len(generated.metadata.name) == 10
    before = server.resource_version
    core.create_namespaced_secret(NS, secret("dry"), dry_run="All")
    assert server.get_object("secrets", NS, "dry") is None
    assert server.resource_version == before
    server.auto_create_namespaces = True
    core.create_namespaced_secret("fresh", secret("s"))
    assert server.get_object("namespaces", None, "fresh")["status"]["phase"] == "Active"


def test_delete_preconditions_conflict(core):
    core.create_namespaced_secret(NS, secret("s"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))
    with pytest.raises(ApiException) as raised:
        core.delete_namespaced_secret("s", NS, body=options)
    assert raised.value.status == 409
    assert "Precondition failed: UID in precondition: other" in raised.value.body


def test_direct_store_access(server):
    stored = server.put_object("secrets", secret("s", data={"k": b64("v")}), NS)
    assert stored["kind"] == "Secret" and stored["metadata"]["resourceVersion"]
    assert server.get_object("secrets", NS, "s")["data"] == {"k": b64("v")}
    assert [obj["metadata"]["name"] for obj in server.objects("secrets")] == ["s"]
    assert server.delete_object("secrets", NS, "s") is True
    assert server.delete_object("secrets", NS, "s") is False
    with pytest.raises(ApiError) as invalid:
        server.put_object("secrets", secret("Not_Valid"), NS)
    assert invalid.value.code == 422
    assert [ns["metadata"]["name"] for ns in server.objects("namespaces")] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]


def test_kubeconfig_file_works_with_new_client_from_config(server, tmp_path):
    path = server.kubeconfig(tmp_path / "kubeconfig")
    api = kubernetes.config.new_client_from_config(config_file=path)
    assert NS in names(client.CoreV1Api(api).list_namespace().items)


def test_discovery_endpoints(api):
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {group.name for group in client.ApisApi(api).get_api_versions().groups}
    assert {"coordination.k8s.io", "events.k8s.io"} <= groups


def test_many_concurrent_clients(server):
    server.latency = 0.005
    server.put_object("secrets", secret("s"), NS)
    core = client.CoreV1Api(server.api_client(connection_pool_maxsize=50))
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: core.read_namespaced_secret("s", NS).metadata.name,
                                range(400)))
    assert results == ["s"] * 400
    assert server.count(verb="get", status=200) == 400


@pytest.fixture
def file_descriptors():
    """Room for 1000 client plus 1000 server sockets in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2500
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def max_in_flight(records) -> int:
    edges = sorted([(r.time, 1) for r in records] + [(r.time + r.duration, -1) for r in records])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_a_thousand_simultaneous_connections(server, file_descriptors):
    server.latency = 0.5  # long enough for requests to pile up while TLS handshakes go on
    context = ssl.create_default_context(cadata=server.ca_pem.decode())
    host, port = server.address.split(":")
    request = (f"GET /api/v1/namespaces/{NS} HTTP/1.1\r\nHost: {server.address}\r\n"
               f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n").encode()

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(request)
        response = await reader.read()
        writer.close()
        return response.split(b" ", 2)[1]

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(one() for _ in range(1000)))

    assert asyncio.run(all_at_once()) == [b"200"] * 1000
    assert server.count(verb="get", resource="namespaces", status=200) == 1000
    assert max_in_flight(server.requests) >= 100
