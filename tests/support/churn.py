"""Namespace churn through the fake API server: what regcred's tables keep once namespaces are gone.

A third of the namespaces hold a foreign Secret with regcred's name (remembered as foreign), a
third fail their first write (remembered as failing, repaired in the background), a third are
plain. Every one gets an admission, then every one is deleted and emptied as the namespace
controller does, and the clock moves an hour on (every time to live in regcred is minutes).

Memory is counted two ways: the bytes still held by objects allocated in ``webhook/``
(tracemalloc, so a table a future change adds is held to it too), and the process's VmRSS.
``tests/test_lifecycle.py`` runs it with 600 namespaces; ``bench/churn.py`` with 10,000.
"""

from __future__ import annotations

import asyncio
import gc
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
class Churned:
    """Bytes held by webhook/ objects, and VmRSS in bytes: before, at the peak, after."""

    baseline: int
    churned: int
    after: int
    rss_baseline: int
    rss_churned: int
    rss_after: int

    @property
    def kept(self) -> float:
        """What stays, as a fraction of what the churn added (webhook/ objects)."""
        return (self.after - self.baseline) / max(self.churned - self.baseline, 1)


def churn(count: int) -> Churned:
    with FakeApiServer() as server:
        names = [f"churn-{i}" for i in range(count)]
        for i, namespace in enumerate(["warm-up", "after", *names]):
            server.add_namespace(namespace)
            if i % 3 == 1:  # not ours: remembered as foreign
                server.put_object("secrets", {"metadata": {"name": REGISTRY.secret_name}}, namespace)
            if i % 3 == 2:  # remembered as failing, and repaired in the background
                server.fail_next(1, 500, "create", "secrets", namespace=namespace)
        return asyncio.run(_main(server, names, Clock(1000.0)))


async def _main(server: FakeApiServer, names: list[str], clock: Clock) -> Churned:
    client = kube_client(server, request_timeout=10)
    store = SecretWriter(KubeSecretStore(client), clock=clock)
    material = DictMaterial({"hub": {"username": "u", "password": "p"}})
    tokens = CredentialCache({"basic": BasicProvider()}, material, Metrics())
    provisioner = Provisioner(tokens, store, Metrics(), clock=clock)
    store.store.start()
    await asyncio.wait_for(store.store.synced.wait(), 5)
    await provisioner.provision("warm-up", [REGISTRY], dry_run=False)
    tasks = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        baseline, rss_baseline = _webhook_bytes(), _rss()
        for start in range(0, len(names), BATCH):
            await asyncio.gather(*(provisioner.provision(namespace, [REGISTRY], dry_run=False)
                                   for namespace in names[start:start + BATCH]))
        churned, rss_churned = _webhook_bytes(), _rss()
        for namespace in names:  # deleted, and emptied as the namespace controller does
            server.delete_object("namespaces", None, namespace)
            server.finish_namespace_deletion(namespace)
        timeout = 20 + len(names) / 100
        await eventually(lambda: len(store.managed()) == 1, timeout=timeout, what="the deletions watched")
        # Repairs of the failed writes land, or find their namespace gone, and end.
        await eventually(lambda: len(asyncio.all_tasks()) <= tasks, timeout=timeout, what="the repairs to end")
        clock.advance(LATER)
        await provisioner.provision("after", [REGISTRY], dry_run=False)  # what a new write sweeps
        return Churned(baseline, churned, _webhook_bytes(), rss_baseline, rss_churned, _rss())
    finally:
        tracemalloc.stop()
        await provisioner.aclose()
        await store.stop()
        client.close()


def _webhook_bytes() -> int:
    gc.collect()  # failed writes leave exception-traceback cycles behind: garbage, not memory held
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/webhook/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
