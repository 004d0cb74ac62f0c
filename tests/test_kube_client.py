"""Client construction and the client-side rate limit."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.fakes.apiserver import FakeApiServer
from webhook.kube.client import KubeClient, TokenBucket, own_namespace


class FakeTime:
    """A clock and a sleep that records; ``advance`` makes sleeping move the clock."""

    def __init__(self, advance: bool = True) -> None:
        self.now = 100.0
        self.advance = advance
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        if self.advance:
            self.now += seconds


@pytest.mark.parametrize(("qps", "burst", "calls", "concurrent", "slept"), [
    pytest.param(10, 2, 5, False, [0.1, 0.1, 0.1], id="sequential-after-burst"),
    pytest.param(10, 2, 5, True, [0.1, 0.2, 0.3], id="concurrent-waiters-queue"),
    pytest.param(10, 5, 5, True, [], id="within-burst"),
    pytest.param(0, 1, 50, True, [], id="unlimited"),
])
def test_token_bucket_paces_calls(qps, burst, calls, concurrent, slept):
    time = FakeTime(advance=not concurrent)  # concurrent callers all arrive at the same instant
    bucket = TokenBucket(qps, burst, clock=time.clock, sleep=time.sleep)

    async def main():
        if concurrent:
            await asyncio.gather(*(bucket.acquire() for _ in range(calls)))
        else:
            for _ in range(calls):
                await bucket.acquire()

    asyncio.run(main())
    assert time.slept == slept


def test_token_bucket_refills_while_idle():
    time = FakeTime()
    bucket = TokenBucket(10, 2, clock=time.clock, sleep=time.sleep)

    async def main():
        for _ in range(2):
            await bucket.acquire()
        time.now += 60  # idle: back to a full burst, never more
        for _ in range(3):
            await bucket.acquire()

    asyncio.run(main())
    assert time.slept == [0.1]


@pytest.mark.parametrize(("explicit", "env", "expected"), [
    pytest.param("flag-ns", "env-ns", "flag-ns", id="flag-wins"),
    pytest.param(None, "env-ns", "env-ns", id="pod-namespace-env"),
])
def test_own_namespace(monkeypatch, explicit, env, expected):
    monkeypatch.setenv("POD_NAMESPACE", env)
    assert own_namespace(explicit) == expected


@pytest.mark.parametrize("via", ["argument", "KUBECONFIG"])
def test_connect_from_a_kubeconfig(tmp_path, monkeypatch, via):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeApiServer() as server:
        path = server.kubeconfig(tmp_path / "config")
        if via == "KUBECONFIG":
            monkeypatch.setenv("KUBECONFIG", path)
        client = KubeClient.connect(path if via == "argument" else None, qps=0)

        async def main():
            return await client.call_json(client.core.list_namespace)

        names = [ns["metadata"]["name"] for ns in asyncio.run(main())["items"]]
        client.close()
    assert "default" in names


def test_blocking_calls_run_off_the_event_loop():
    with FakeApiServer() as server:
        client = KubeClient(server.api_client(), qps=0)

        def where(*_args, **_kwargs) -> str:
            return threading.current_thread().name

        async def main():
            return threading.current_thread().name, await client.call(where)

        loop_thread, call_thread = asyncio.run(main())
        client.close()
    assert call_thread != loop_thread and call_thread.startswith("kube-call")


def test_a_sibling_shares_connections_but_not_the_rate_limit():
    with FakeApiServer() as server:
        client = KubeClient(server.api_client(), qps=1, burst=1)
        sibling = client.with_limit(qps=0, burst=1)
        assert sibling.api is client.api and sibling.limiter is not client.limiter

        async def main():
            await client.limiter.acquire()  # the parent's bucket is now empty
            return await asyncio.wait_for(sibling.call_json(sibling.core.list_namespace), 2)

        assert asyncio.run(main())["kind"] == "NamespaceList"
        client.close()
