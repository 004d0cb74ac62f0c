"""The watched registry-list ConfigMap, the InvalidRegistryList Event, and the event recorder."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.apiserver import FakeApiServer
from tests.support.kube import eventually, kube_client
from webhook.activeregistries import ActiveRegistries
from webhook.kube.configmap import INVALID_REASON, ConfigMapWatch, RegistryListApplier
from webhook.kube.events import EventRecorder, ObjectRef
from webhook.metrics import Metrics

OWN = "regcred"
GOOD = "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}\n"
BETTER = GOOD + "- {id: quay, url: quay.io/acme, type: basic, secretRef: quay-creds}\n"
BROKEN = "registries:\n- {id: Hub!, url: docker.io/acme, type: nope}\n"
# Two registries: keys. A plain YAML load keeps the second list alone, which is valid.
DUPLICATED = BETTER + "registries:\n- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}\n"


def configmap(text: str | None, name: str = "regcred-registries") -> dict:
    return {"metadata": {"name": name}, "data": {"registries.yaml": text} if text is not None else {}}


@pytest.fixture
def server():
    with FakeApiServer(namespaces=("default", OWN)) as fake:
        yield fake


class Watched:
    """An ActiveRegistries fed by a ConfigMapWatch through the RegistryListApplier."""

    def __init__(self, server: FakeApiServer):
        self.client = kube_client(server)
        self.metrics = Metrics()
        self.config = ActiveRegistries(self.metrics)
        self.applied = 0
        self.applier = RegistryListApplier(self.config, EventRecorder(self.client, instance="test"),
                                           source=f"{OWN}/regcred-registries", on_applied=self._applied)
        self.watch = ConfigMapWatch(self.client, OWN, "regcred-registries", self.applier)

    def _applied(self) -> None:
        self.applied += 1

    def ids(self) -> list[str]:
        return [r.id for r in self.config.registries.registries] if self.config.registries else []

    def valid(self) -> float:
        return self.metrics.registry.get_sample_value("regcred_config_valid")

    async def start(self) -> Watched:
        self.watch.start()
        await asyncio.wait_for(self.watch.synced.wait(), 5)
        return self

    async def stop(self) -> None:
        await self.applier.drain()
        await self.watch.stop()
        self.client.close()


def warnings(server: FakeApiServer) -> list[dict]:
    return [e for e in server.objects("events", OWN) if e["reason"] == INVALID_REASON]


@pytest.mark.parametrize(("broken", "reason"), [
    pytest.param(BROKEN, "registries[0].id", id="invalid-entry"),
    pytest.param(DUPLICATED, "line 4: duplicate key 'registries' (first at line 1)", id="duplicate-key"),
])
def test_a_change_takes_effect_and_an_invalid_one_keeps_the_last_good_list(server, broken, reason):
    server.put_object("configmaps", configmap(GOOD), OWN)

    async def main():
        watched = await Watched(server).start()
        await eventually(lambda: watched.ids() == ["hub"])
        server.put_object("configmaps", configmap(BETTER), OWN)
        await eventually(lambda: watched.ids() == ["hub", "quay"], what="the new list")
        assert watched.applied == 2
        server.put_object("configmaps", configmap(broken), OWN)
        await eventually(lambda: watched.valid() == 0, what="the broken list to be seen")
        assert watched.ids() == ["hub", "quay"]
        await watched.applier.drain()
        await watched.stop()

    asyncio.run(main())
    [event] = warnings(server)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "ConfigMap" and event["involvedObject"]["name"] == "regcred-registries"
    stored = server.get_object("configmaps", OWN, "regcred-registries")
    assert event["involvedObject"]["uid"] == stored["metadata"]["uid"]
    assert "keeping the last good list" in event["message"] and reason in event["message"]


@pytest.mark.parametrize(("initial", "error"), [
    pytest.param(None, "is missing", id="configmap-missing"),
    pytest.param(configmap(None), "is missing", id="key-missing"),
])
def test_missing_list_is_an_error_without_event(server, initial, error):
    if initial is not None:
        server.put_object("configmaps", initial, OWN)

    async def main():
        watched = await Watched(server).start()
        await eventually(lambda: watched.config.errors, what="the error")
        assert error in watched.config.errors[0] and not watched.config.ready and watched.valid() == 0
        server.put_object("configmaps", configmap(GOOD), OWN)  # created later: picked up
        await eventually(lambda: watched.ids() == ["hub"])
        await watched.stop()

    asyncio.run(main())
    assert warnings(server) == []


def test_edits_to_other_keys_are_not_reapplied(server):
    server.put_object("configmaps", configmap(GOOD), OWN)

    async def main():
        watched = await Watched(server).start()
        await eventually(lambda: watched.applied == 1)
        cm = configmap(GOOD)
        cm["data"]["notes"] = "hello"
        server.put_object("configmaps", cm, OWN)
        server.put_object("configmaps", configmap(BETTER), OWN)
        await eventually(lambda: watched.applied == 2)
        assert watched.ids() == ["hub", "quay"]
        await watched.stop()

    asyncio.run(main())


def test_event_recording_is_best_effort(server):
    async def main():
        client = kube_client(server)
        recorder = EventRecorder(client, instance="pod-1")
        ref = ObjectRef("ConfigMap", OWN, "x", uid="u-1")
        assert await recorder.record(ref, type="Normal", reason="Tested", message="m" * 5000)
        server.forbid(verb="create", resource="events")
        assert not await recorder.record(ref, type="Warning", reason="Denied", message="no")
        client.close()

    asyncio.run(main())
    [event] = server.objects("events", OWN)
    assert len(event["message"]) == 1024
    assert (event["source"]["component"], event["reportingInstance"]) == ("regcred", "pod-1")
