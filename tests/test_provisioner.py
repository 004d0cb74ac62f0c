"""The Provisioner's warm path: an admission whose credential is cached and still handed out
(one due for refresh starts its refresh ahead) and whose Secret the store would keep is
answered from memory, without a store call; anything else takes the slow path through
``tokens.get`` and ``store.ensure``.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json

import pytest

from tests.support.fake_tokens import REGISTRY, Clock, FakeMaterial, FakeProvider, run, settle
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers import CredentialUnavailable
from webhook.provisioner import Provisioner
from webhook.pullsecrets import InMemorySecretStore
from webhook.secretwriter import SecretWriter


class CountingStore(SecretWriter):
    """Local mode's writer (the in-memory store, sole writer), counting the Provisioner's ensures."""

    def __init__(self) -> None:
        super().__init__(InMemorySecretStore(), sole_writer=True)
        self.ensures = 0

    def ensure(self, desired, **options):
        self.ensures += 1
        return super().ensure(desired, **options)


def then_nothing(world) -> None:
    pass


def then_refresh_due(world) -> None:
    world["clock"].advance(0.7 * 3600)  # past 2/3 of the hour-long token's life


def then_refresh_due_and_cloud_down(world) -> None:
    then_refresh_due(world)
    world["provider"].fail_with = CredentialUnavailable("the cloud is down")


def then_secret_deleted(world) -> None:
    world["store"].store._secrets.clear()


def then_credential_forgotten(world) -> None:
    world["tokens"].invalidate()


async def then_token_refreshed(world) -> None:
    then_refresh_due(world)
    await world["tokens"].get(REGISTRY)  # starts the refresh ahead, as any caller at this point does
    await settle()  # the new token is minted and cached; the stored Secret still holds the old one


def then_secret_overwritten(world) -> None:
    store = world["store"].store
    secret = store.get("team-a", REGISTRY.secret_name)
    store.put({**secret, "data": {".dockerconfigjson": "e30="}})  # someone else's write, still labelled ours


def then_registry_moved(world) -> None:
    # The registry list reloaded: same id, another url. The cached token was minted for the old one.
    world["registry"] = REGISTRY.model_copy(update={"url": "210987654321.dkr.ecr.eu-west-1.amazonaws.com"})


@pytest.mark.parametrize(("change", "ensures", "mints"), [
    pytest.param(then_nothing, 0, 1, id="warm-from-memory"),
    # Due: still warm (the Secret holds a token still handed out); the refresh starts ahead.
    pytest.param(then_refresh_due, 0, 2, id="refresh-due-stays-warm-and-refreshes-ahead"),
    pytest.param(then_refresh_due_and_cloud_down, 0, 2, id="refresh-due-with-the-cloud-down-stays-warm"),
    pytest.param(then_secret_deleted, 1, 1, id="secret-gone-is-rewritten"),
    pytest.param(then_credential_forgotten, 1, 2, id="credential-forgotten-is-reminted"),
    pytest.param(then_token_refreshed, 1, 2, id="refreshed-token-is-written"),
    pytest.param(then_secret_overwritten, 1, 1, id="secret-overwritten-is-rewritten"),
    pytest.param(then_registry_moved, 1, 2, id="registry-moved-is-reminted-and-rewritten"),
])
def test_the_second_admission_touches_the_store_only_when_it_must(change, ensures, mints):
    clock = Clock()
    provider = FakeProvider(clock)
    metrics = Metrics()
    tokens = CredentialCache({"ecr": provider}, FakeMaterial(), metrics, clock=clock)
    store = CountingStore()
    provisioner = Provisioner(tokens, store, metrics)
    world = {"clock": clock, "store": store, "tokens": tokens, "registry": REGISTRY, "provider": provider}

    async def main():
        for _ in range(2):  # the first mints and writes; the second is warm, and remembers what it checked
            [first] = await provisioner.provision("team-a", [REGISTRY], dry_run=False)
            assert first.reference and first.warning is None
        before = store.ensures
        if inspect.isawaitable(changed := change(world)):
            await changed
        [second] = await provisioner.provision("team-a", [world["registry"]], dry_run=False)
        await settle()
        return second, store.ensures - before

    second, calls = run(main())
    assert second.reference and second.warning is None
    assert calls == ensures
    assert provider.calls == mints
    # What is stored holds credentials for the registry as it now is, not a remembered Secret.
    stored = store.store.get("team-a", REGISTRY.secret_name)["data"][".dockerconfigjson"]
    assert set(json.loads(base64.b64decode(stored))["auths"]) == {world["registry"].url}
    unchanged = metrics.registry.get_sample_value(
        "regcred_pull_secret_writes_total", {"registry": REGISTRY.id, "outcome": "unchanged"})
    if ensures == 0:
        assert unchanged == 2  # the fast path still counts what it did


class RecordingStore(SecretWriter):
    """Records when the Provisioner asks it to ensure."""

    def __init__(self) -> None:
        super().__init__(InMemorySecretStore(), sole_writer=True)
        self.asked: list[str] = []

    def ensure(self, desired, **options):
        self.asked.append(desired["metadata"]["namespace"])
        return super().ensure(desired, **options)


@pytest.mark.parametrize(("credential_cached", "asked_in_step"), [
    pytest.param(True, ["team-b"], id="credential-cached-write-starts-in-the-admission-step"),
    pytest.param(False, [], id="nothing-cached-mints-first"),
])
def test_a_cold_admission_starts_its_write_in_its_own_step(credential_cached, asked_in_step):
    """A store starts its write the moment ``ensure`` is called (KubeSecretStore's task), so the
    Provisioner calls it within the admission's own step whenever no mint must come first."""
    clock = Clock()
    metrics = Metrics()
    tokens = CredentialCache({"ecr": FakeProvider(clock)}, FakeMaterial(), metrics, clock=clock)
    store = RecordingStore()
    provisioner = Provisioner(tokens, store, metrics)

    async def main():
        if credential_cached:
            await tokens.get(REGISTRY)
        admission = asyncio.ensure_future(provisioner.provision("team-b", [REGISTRY], dry_run=False))
        await asyncio.sleep(0)  # exactly the admission's first step runs
        in_step = list(store.asked)
        [answer] = await admission
        return in_step, answer

    in_step, answer = run(main())
    assert in_step == asked_in_step
    assert answer.reference and answer.warning is None
    assert store.asked == ["team-b"]
