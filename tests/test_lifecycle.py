"""What regcred remembers and what it leaves running, against namespace churn and shutdown.

* Tables kept per namespace (foreign Secrets, failing writes, repairs, built pull Secrets)
  return to their baseline once the namespaces are gone and their time to live has passed:
  measured as the memory still held by objects allocated in ``webhook/`` (tracemalloc), so
  whatever table a future change adds is held to it too.
* A stop cancels what is still pending (repairs of failed writes, mints) before the API
  client closes, within the shutdown's time, and nothing reaches the API server afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from tests.conftest import DictMaterial
from tests.fakes.apiserver import FakeApiServer
from tests.support.fake_tokens import Clock
from tests.support.kube import Instance, eventually, kube_client, seed_cluster
from webhook.composition import STOP_SECONDS
from webhook.credentialcache import CredentialCache
from webhook.kube.secretstore import KubeSecretStore
from webhook.metrics import Metrics
from webhook.providers.basic import BasicProvider
from webhook.provisioner import Provisioner
from webhook.registries import parse_registries
from webhook.secretwriter import SecretWriter

REGISTRY = parse_registries(
    "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub}\n").registries[0]
CHURNED = 600  # namespaces: a third with a foreign Secret, a third whose first write fails
# An hour later (every time to live in regcred is minutes at most).
LATER = 3600.0


def _webhook_bytes() -> int:
    gc.collect()  # failed writes leave exception-traceback cycles behind: garbage, not memory held
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/webhook/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_namespace_churn_leaves_regcred_tables_at_their_baseline():
    with FakeApiServer() as server:
        names = [f"churn-{i}" for i in range(CHURNED)]
        for i, namespace in enumerate(["warm-up", "after", *names]):
            server.add_namespace(namespace)
            if i % 3 == 1:  # not ours: remembered as foreign
                server.put_object("secrets", {"metadata": {"name": REGISTRY.secret_name}}, namespace)
            if i % 3 == 2:  # remembered as failing, and repaired in the background
                server.fail_next(1, 500, "create", "secrets", namespace=namespace)
        clock = Clock(1000.0)

        async def main() -> tuple[int, int, int]:
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
                baseline = _webhook_bytes()
                for start in range(0, CHURNED, 100):
                    await asyncio.gather(*(provisioner.provision(namespace, [REGISTRY], dry_run=False)
                                           for namespace in names[start:start + 100]))
                churned = _webhook_bytes()
                for namespace in names:  # deleted, and emptied as the namespace controller does
                    server.delete_object("namespaces", None, namespace)
                    server.finish_namespace_deletion(namespace)
                await eventually(lambda: len(store.managed()) == 1, timeout=20, what="the deletions watched")
                # Repairs of the failed writes land, or find their namespace gone, and end.
                await eventually(lambda: len(asyncio.all_tasks()) <= tasks, timeout=20, what="the repairs to end")
                clock.advance(LATER)
                await provisioner.provision("after", [REGISTRY], dry_run=False)  # what a new write sweeps
                return baseline, churned, _webhook_bytes()
            finally:
                tracemalloc.stop()
                await provisioner.aclose()
                await store.stop()
                client.close()

        baseline, churned, after = asyncio.run(main())
        # What stays does not grow with the namespaces that came and went: the bounded table of
        # shared Secret values, the room dicts keep after a peak (about 5 % of the churn). A
        # watch that kept its last burst's lines alive while idle held 34 % (fixed). Everything
        # kept per namespace would be most of what the churn added.
        assert after - baseline < (churned - baseline) / 5, (baseline, churned, after)


def test_stop_cancels_pending_repairs_before_the_client_closes():
    teams = [f"team-{i}" for i in range(5)]
    with FakeApiServer() as api:
        seed_cluster(api, teams)

        async def main():
            regcred = await Instance(api, identity="solo").start()
            before = asyncio.all_tasks()
            api.fail_next(10**6, 500, "create", "secrets")  # every write fails: each admission leaves a repair
            for team in teams:
                status, response = await regcred.admit(team)
                assert status == 200 and "will retry" in response["warnings"][0]
            started = time.monotonic()
            await regcred.stop()
            stopping = time.monotonic() - started
            left = {task for task in asyncio.all_tasks() - before if task is not asyncio.current_task()}
            writes = api.count(verb="create", resource="secrets")
            await asyncio.sleep(1.0)  # past the first repair's delay
            return stopping, left, api.count(verb="create", resource="secrets") - writes

        stopping, left, late_writes = asyncio.run(main())
        assert stopping < STOP_SECONDS
        assert not left, left
        assert late_writes == 0
