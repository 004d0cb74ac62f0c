"""One write policy whatever the store: the in-memory store decides exactly as the cluster's.

``test_kube_secretstore.EXISTING`` tables what an ensure does with each kind of existing
Secret on the fake API server. The same table runs here on ``InMemorySecretStore``: both
stores only create, read and replace, and ``SecretWriter`` decides for both, so the admission
tests that run on the in-memory store run under production's rules.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.kube import auths
from tests.test_kube_secretstore import EXISTING, NAME, NS
from webhook.pullsecrets import InMemorySecretStore
from webhook.secretwriter import SecretWriter


@pytest.mark.parametrize(("existing", "wanted", "authoritative", "outcome", "password"), EXISTING)
def test_the_in_memory_store_follows_the_cluster_s_rules(existing, wanted, authoritative, outcome, password):
    store = InMemorySecretStore()
    store.put({**existing, "metadata": {**existing["metadata"], "namespace": NS}})
    writer = SecretWriter(store)

    async def twice() -> tuple[str, str]:
        first = await writer.ensure(wanted, authoritative=authoritative)
        again = await writer.ensure(wanted, authoritative=authoritative)
        return first.outcome, again.outcome

    first, again = asyncio.run(twice())
    assert first == outcome
    assert again == ("unchanged" if outcome == "updated" else outcome)
    assert auths(store.get(NS, NAME))["docker.io/acme"]["password"] == password


def test_a_sole_writer_replaces_what_an_admission_would_keep():
    """Local mode (no cluster, no refresher): a rotated credential must reach its Secret."""
    [case] = [p for p in EXISTING if p.id == "admission-keeps-ours-fresh"]
    existing, wanted, _, _, _ = case.values
    store = InMemorySecretStore()
    store.put({**existing, "metadata": {**existing["metadata"], "namespace": NS}})

    async def ensure() -> str:
        return (await SecretWriter(store, sole_writer=True).ensure(wanted)).outcome

    outcome = asyncio.run(ensure())
    assert outcome == "updated"
    assert auths(store.get(NS, NAME))["docker.io/acme"]["password"] == "pw-1"


def test_a_replace_of_a_stale_copy_is_refused_as_the_api_server_refuses_it():
    [case] = [p for p in EXISTING if p.id == "refresher-replaces-ours"]
    existing, wanted, _, _, _ = case.values
    store = InMemorySecretStore()
    store.put(existing)
    stale = store.get(NS, NAME)
    store.put({**existing})  # someone wrote it again meanwhile: a new version

    async def replace() -> tuple[int, int]:
        return await store.replace(stale, wanted), await store.delete(stale)

    assert asyncio.run(replace()) == (409, 409)
