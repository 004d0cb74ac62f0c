"""Namespace churn through the fake API server: what regcred keeps once namespaces are gone.

A third of the namespaces hold a foreign Secret with regcred's name (remembered as foreign), a
third fail their first write (remembered as failing, repaired in the background), a third are
plain. Every one gets an admission, then every one is deleted and emptied as the namespace
controller does, and the clock moves an hour on (every time to live in regcred is minutes).
That is one round; ``rounds`` runs it again with new namespaces.

Memory is counted three ways, each before the first round and at each round's peak and end:

* the bytes still held by objects allocated in ``webhook/`` (tracemalloc, so a table a future
  change adds is held to it too): do regcred's own tables go back to their baseline?
* the blocks the whole process holds in Python's allocator (``sys.getallocatedblocks``), the
  fake API server's request log cleared first: does a second round reuse what the first one
  grew, or keep something of every namespace somewhere (a task, a future, a library's table)?
* the process's VmRSS, which CPython does not give back (freed memory is kept for reuse).

``tests/test_lifecycle.py`` runs three rounds of 400 namespaces; ``bench/churn.py`` with 10,000.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import DictMaterial
from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import Clock
from tests.support.kube import eventually, kube_client
from webhook.credentialcache import CredentialCache
from webhook.kube.secretstore import KubeSecretStore
from webhook.metrics import Metrics
from webhook.providers.basic import BasicProvider
from webhook.provisioner import Provisioner
from webhook.registries import parse_registries
from webhook.secretwriter import SecretWriter

REGISTRY = parse_registries(
    "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub}\n").registries[0]
LATER = 3600.0  # an hour on: past every time to live regcred keeps
BATCH = 100  # admissions at once


@dataclass(frozen=True)
class Held:
    """What the process held at one moment."""

    webhook_bytes: int  # held by objects allocated in webhook/
    blocks: int  # allocated in Python's allocator, whole process
    rss: int  # VmRSS, bytes


@dataclass(frozen=True)
class Round:
    peak: Held  # every namespace of the round admitted
    after: Held  # the round's namespaces gone, and the clock an hour on


@dataclass(frozen=True)
class Churned:
    baseline: Held
    rounds: list[Round]

    @property
    def kept(self) -> float:
        """What regcred's own objects still hold after the last round, as a fraction of what
        that round added at its peak."""
        last = self.rounds[-1]
        return (last.after.webhook_bytes - self.baseline.webhook_bytes) / max(
            last.peak.webhook_bytes - self.baseline.webhook_bytes, 1)

    @property
    def regrown(self) -> float:
        """What the whole process kept of the last round (blocks), as a fraction of what that
        round added at its peak: about 0 when a round reuses the room the one before it grew."""
        before, last = self.rounds[-2].after, self.rounds[-1]
        return (last.after.blocks - before.blocks) / max(last.peak.blocks - before.blocks, 1)


def churn(count: int, rounds: int = 1) -> Churned:
    with FakeApiServer() as server:
        for namespace in ("warm-up", "after"):
            server.add_namespace(namespace)
        return asyncio.run(_main(server, count, rounds, Clock(1000.0)))


def _add(server: FakeApiServer, names: list[str]) -> None:
    for i, namespace in enumerate(names):
        server.add_namespace(namespace)
        if i % 3 == 1:  # not ours: remembered as foreign
            server.put_object("secrets", {"metadata": {"name": REGISTRY.secret_name}}, namespace)
        if i % 3 == 2:  # remembered as failing, and repaired in the background
            server.fail_next(1, 500, "create", "secrets", namespace=namespace)


async def _main(server: FakeApiServer, count: int, rounds: int, clock: Clock) -> Churned:
    client = kube_client(server, request_timeout=10)
    store = SecretWriter(KubeSecretStore(client), clock=clock)
    material = DictMaterial({"hub": {"username": "u", "password": "p"}})
    tokens = CredentialCache({"basic": BasicProvider()}, material, Metrics())
    provisioner = Provisioner(tokens, store, Metrics(), clock=clock)
    store.store.start()
    await asyncio.wait_for(store.store.synced.wait(), 5)
    await provisioner.provision("warm-up", [REGISTRY], dry_run=False)
    await provisioner.provision("after", [REGISTRY], dry_run=False)
    tasks = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        baseline = _held(server)
        results = []
        for round_ in range(rounds):
            names = [f"churn-{round_}-{i}" for i in range(count)]
            _add(server, names)
            for start in range(0, count, BATCH):
                await asyncio.gather(*(provisioner.provision(namespace, [REGISTRY], dry_run=False)
                                       for namespace in names[start:start + BATCH]))
            peak = _held(server)
            for namespace in names:  # deleted, and emptied as the namespace controller does
                server.delete_object("namespaces", None, namespace)
                server.finish_namespace_deletion(namespace)
            timeout = 20 + count / 100
            await eventually(lambda: len(store.managed()) == 2, timeout=timeout, what="the deletions watched")
            # Repairs of the failed writes land, or find their namespace gone, and end.
            await eventually(lambda: len(asyncio.all_tasks()) <= tasks, timeout=timeout, what="the repairs to end")
            clock.advance(LATER)
            await provisioner.provision("after", [REGISTRY], dry_run=False)  # an admission sweeps the tables
            results.append(Round(peak, _held(server)))
        return Churned(baseline, results)
    finally:
        tracemalloc.stop()
        await provisioner.aclose()
        await store.stop()
        client.close()


def _held(server: FakeApiServer) -> Held:
    server.reset_log()  # the fake's, not regcred's: it records every request
    gc.collect()  # failed writes leave exception-traceback cycles behind: garbage, not memory held
    blocks, rss = sys.getallocatedblocks(), _rss()  # before the snapshot, which allocates
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/webhook/*")])
    return Held(sum(stat.size for stat in snapshot.statistics("filename")), blocks, rss)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
