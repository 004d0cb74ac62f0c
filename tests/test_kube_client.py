"""Client construction, the client-side rate limit and Retry-After."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import ApiException, Configuration

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import CountingBucket
from webhook.kube.client import MAX_RETRIES, MAX_RETRY_AFTER, KubeClient, TokenBucket, retry_after
from webhook.kube.connection import TRANSPORT_RETRIES, AtMostEvery, ThrottledConfiguration, own_namespace


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


@pytest.mark.parametrize(("qps", "burst", "group", "calls", "concurrent", "slept"), [
    pytest.param(10, 2, 1, 5, False, [0.1, 0.1, 0.1], id="sequential-after-burst"),
    pytest.param(10, 2, 1, 5, True, [0.1, 0.2, 0.3], id="concurrent-waiters-queue"),
    pytest.param(10, 5, 1, 5, True, [], id="within-burst"),
    pytest.param(0, 1, 1, 50, True, [], id="unlimited"),
    # group: the grain is group / qps, 0.4 s here, and FakeTime starts on a multiple of it (100.0).
    pytest.param(10, 4, 4, 12, False, [0.4, 0.4], id="grouped-sequential-wake-once-per-grain-then-find-tokens"),
    pytest.param(10, 4, 1, 12, False, [0.1] * 8, id="ungrouped-sequential-for-comparison"),
    pytest.param(10, 2, 2, 8, True, [0.2, 0.2, 0.4, 0.4, 0.6, 0.6], id="grouped-concurrent-waiters-wake-in-pairs"),
    pytest.param(10, 2, 1, 8, True, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], id="ungrouped-concurrent-for-comparison"),
    pytest.param(10, 8, 4, 8, True, [], id="grouped-within-burst-never-waits"),
    pytest.param(0, 4, 4, 20, True, [], id="grouped-unlimited"),
])
def test_token_bucket_paces_calls(qps, burst, group, calls, concurrent, slept):
    time = FakeTime(advance=not concurrent)  # concurrent callers all arrive at the same instant
    bucket = TokenBucket(qps, burst, group=group, clock=time.clock, sleep=time.sleep)

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


def grouped_and_plain(qps: float, burst: int, group: int, start: float, gaps: list[float]):
    """The times sequential callers arriving ``gaps`` apart (after each previous call) get
    their tokens, grouped and not."""
    def run(group: int) -> list[float]:
        time = FakeTime()
        time.now = start
        bucket = TokenBucket(qps, burst, group=group, clock=time.clock, sleep=time.sleep)
        calls = []

        async def main():
            for gap in gaps:
                time.now += gap
                await bucket.acquire()
                calls.append(time.now)

        asyncio.run(main())
        return calls

    return run(group), run(1)


RATES = st.sampled_from([1.0, 5.0, 20.0, 50.0])


@given(qps=RATES, burst=st.integers(1, 40), group=st.integers(1, 8), start=st.floats(0, 1000),
       gaps=st.lists(st.sampled_from([0.0, 0.001, 0.03, 0.25, 2.0]), min_size=1, max_size=120))
def test_token_bucket_group_adds_at_most_group_calls_to_any_window(qps, burst, group, start, gaps):
    """No window holds more than ``group`` calls over what the bucket alone allows (burst + qps
    x its length): a waiter released late meets the tokens that filled meanwhile."""
    group = min(group, burst)
    grouped, _ = grouped_and_plain(qps, burst, group, start, gaps)
    for i, first in enumerate(grouped):
        for j in range(i, len(grouped)):
            assert j - i + 1 <= burst + group + qps * (grouped[j] - first) + 1e-6


@given(qps=RATES, burst=st.integers(1, 40), group=st.integers(1, 8), start=st.floats(0, 1000),
       calls=st.integers(1, 200))
def test_token_bucket_group_keeps_the_rate_of_a_busy_caller(qps, burst, group, start, calls):
    """Back-to-back callers: grouped, the last call is at most one grain later than without
    grouping, so the long-run rate is the bucket's."""
    group = min(group, burst)
    grouped, plain = grouped_and_plain(qps, burst, group, start, [0.0] * calls)
    assert grouped[-1] <= plain[-1] + group / qps + 1e-6


@pytest.mark.parametrize(("burst", "group"), [
    pytest.param(4, 5, id="group-over-burst-would-lose-tokens-at-the-cap"),
    pytest.param(4, 0, id="group-under-one"),
])
def test_token_bucket_refuses_a_group_it_cannot_keep(burst, group):
    with pytest.raises(ValueError, match="group"):
        TokenBucket(10, burst, group=group)


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


@pytest.mark.parametrize(("calls", "ran"), [
    pytest.param([0.0, 0.5, 0.99], [0.0], id="within-a-second-once"),
    pytest.param([0.0, 1.0, 1.5, 2.0], [0.0, 1.0, 2.0], id="again-after-each-second"),
    pytest.param([0.0, 5.0, 5.2, 9.0], [0.0, 5.0, 9.0], id="after-a-pause-at-once"),
])
def test_auth_refresh_runs_at_most_once_a_second(calls, ran):
    clock = FakeTime()
    runs: list[float] = []
    hook = AtMostEvery(lambda: runs.append(clock.now - 100.0), 1.0, clock=clock.clock)
    for at in calls:
        clock.now = 100.0 + at
        hook()
    assert runs == ran


def test_a_refresh_hook_that_replaces_itself_stays_throttled():
    """The loaders' hook installs a fresh hook of its own each time it runs (kube_config's
    ``_set_config``, first thing). A worker thread reading the attribute at that moment must
    still get the throttled hook, or it would run the next one unthrottled for good."""
    configuration = ThrottledConfiguration()
    runs: list[int] = []
    seen_meanwhile: list[object] = []

    class LoaderHook:
        def __init__(self, generation: int) -> None:
            self.generation = generation

        def __call__(self, c: Configuration) -> None:
            runs.append(self.generation)
            c.refresh_api_key_hook = LoaderHook(self.generation + 1)
            seen_meanwhile.append(c.refresh_api_key_hook)  # what another thread would read now

    configuration.refresh_api_key_hook = LoaderHook(0)
    throttled = configuration.refresh_api_key_hook
    for _ in range(5):
        configuration.refresh_api_key_hook(configuration)
    assert runs == [0]  # the other four within the same second
    assert seen_meanwhile == [throttled]
    assert configuration.refresh_api_key_hook is throttled and throttled.hook.generation == 1


EXEC_PLUGIN = """
import datetime, json, sys
with open(sys.argv[1], "a") as runs:
    runs.write("ran\\n")
soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": sys.argv[2], "expirationTimestamp": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def test_a_credential_plugin_is_not_run_before_every_request(tmp_path, monkeypatch):
    """A token expiring within the loader's 5-minute margin makes its refresh hook run the
    plugin again before every request; the client runs the hook at most once a second."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    plugin, runs = tmp_path / "plugin.py", tmp_path / "runs"
    plugin.write_text(EXEC_PLUGIN)
    with FakeApiServer() as server:
        config = json.loads(Path(server.kubeconfig(tmp_path / "config")).read_text())
        config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                               "command": sys.executable,
                                               "args": [str(plugin), str(runs), server.token]}}
        (tmp_path / "config").write_text(json.dumps(config))
        client = KubeClient.connect(tmp_path / "config", qps=0)

        async def main(requests: int) -> float:
            started = time.monotonic()
            for _ in range(requests):
                await client.call_json(client.core.list_namespace)  # each authenticated, or it raises
            return time.monotonic() - started

        try:
            elapsed = asyncio.run(main(20))
        finally:
            client.close()
    # Once to load, then at most once per second of requests (and once more at a boundary).
    assert len(runs.read_text().splitlines()) <= 2 + math.ceil(elapsed)


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


@pytest.mark.parametrize(("status", "retry_after", "failures", "requests", "succeeds"), [
    pytest.param(429, 0, 2, 3, True, id="429-retry-after-retried"),
    pytest.param(503, 0, 1, 2, True, id="503-retry-after-retried"),
    pytest.param(500, 0, 1, 2, True, id="500-retry-after-retried"),
    pytest.param(429, None, 1, 1, False, id="429-without-retry-after-fails-at-once"),
    pytest.param(500, None, 1, 1, False, id="500-without-retry-after-fails-at-once"),
    pytest.param(409, 0, 1, 1, False, id="409-is-never-retried"),
    pytest.param(429, 0, 20, MAX_RETRIES + 1, False, id="429-gives-up-after-max-retries"),
])
@pytest.mark.parametrize("verb", ["get", "create"])
def test_retry_after_is_honoured_for_every_verb(status, retry_after, failures, requests, succeeds, verb):
    with FakeApiServer() as server:
        client = KubeClient(server.api_client(retries=TRANSPORT_RETRIES), qps=0, request_timeout=2)
        server.fail_next(failures, status=status, verb=verb, resource="configmaps", retry_after=retry_after)
        body = {"metadata": {"name": "cm"}}

        async def main():
            if verb == "get":
                server.put_object("configmaps", body, "default")
                return await client.call_json(client.core.read_namespaced_config_map, "cm", "default")
            return await client.call_json(client.core.create_namespaced_config_map, "default", body)

        try:
            if succeeds:
                assert asyncio.run(main())["metadata"]["name"] == "cm"
            else:
                with pytest.raises(ApiException) as raised:
                    asyncio.run(main())
                assert raised.value.status == status
        finally:
            client.close()
        assert server.count(verb=verb, resource="configmaps") == requests


def test_the_retry_waits_as_asked_and_takes_a_rate_limit_token():
    bucket = CountingBucket()
    with FakeApiServer() as server:
        client = KubeClient(server.api_client(retries=TRANSPORT_RETRIES), limiter=bucket, request_timeout=2)
        server.fail_next(1, status=429, verb="list", resource="namespaces", retry_after=1)

        async def main():
            return await client.call_json(client.core.list_namespace)

        assert asyncio.run(main())["kind"] == "NamespaceList"
        client.close()
        first, second = [r for r in server.requests if r.resource == "namespaces"]
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0  # waited the server's Retry-After, not less
    assert bucket.taken == 2


@pytest.mark.parametrize(("status", "header", "expected"), [
    pytest.param(429, "3", 3.0, id="seconds"),
    pytest.param(503, "600", MAX_RETRY_AFTER, id="capped"),
    pytest.param(429, "Fri, 27 Nov 2026 10:00:00 GMT", None, id="http-date-ignored-like-client-go"),
    pytest.param(429, None, None, id="absent"),
    pytest.param(404, "1", None, id="not-a-retryable-status"),
])
def test_retry_after_parsing(status, header, expected):
    exc = ApiException(status=status)
    exc.headers = {"Retry-After": header} if header is not None else {}
    assert retry_after(exc) == expected


@given(status=st.integers(100, 599),
       header=st.one_of(st.none(), st.text(max_size=20), st.integers(-10, 10**6).map(str)))
def test_retry_after_is_bounded_and_only_for_overload_statuses(status, header):
    exc = ApiException(status=status)
    exc.headers = {} if header is None else {"Retry-After": header}
    wait = retry_after(exc)
    if status != 429 and status < 500:
        assert wait is None
    elif header is not None and re.fullmatch(r"-?[0-9]+", header):  # a plain integer is always honoured
        assert wait == min(max(int(header), 0), MAX_RETRY_AFTER)
    elif wait is not None:
        assert 0 <= wait <= MAX_RETRY_AFTER and wait == min(max(int(header), 0), MAX_RETRY_AFTER)
