"""The registry list from one ConfigMap key, watched: a change takes effect within seconds.

``ConfigMapWatch`` hands the text of ``registries.yaml`` (None when the ConfigMap or the key is
missing) to a callback whenever it changes, and once after the first list. A field-selected
watch on the name keeps the stream to this one object. ``RegistryListApplier`` is that callback
for ``ActiveRegistries``: a broken list keeps the last good one (``apply_text`` decides) and leaves a
Warning Event on the ConfigMap, where ``kubectl describe configmap`` shows the errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from webhook.activeregistries import ActiveRegistries
from webhook.jsontypes import JsonObject
from webhook.kube.caches import InformerCache
from webhook.kube.client import KubeClient
from webhook.kube.events import EventRecorder, ObjectRef
from webhook.kube.informer import RELIST_BACKOFF, Informer

REGISTRIES_KEY = "registries.yaml"
INVALID_REASON = "InvalidRegistryList"

TextCallback = Callable[["str | None", "JsonObject | None"], None]
_UNSET = object()


class ConfigMapWatch(InformerCache):
    def __init__(self, client: KubeClient, namespace: str, name: str, on_text: TextCallback, *,
                 key: str = REGISTRIES_KEY, informer: Informer | None = None,
                 backoff: tuple[float, float] = RELIST_BACKOFF):
        self._key = key
        self._on_text = on_text
        self._informer = informer or Informer(
            client, client.core.list_namespaced_config_map, namespace,
            field_selector=f"metadata.name={name}", name=f"configmap-{name}", backoff=backoff)
        self._informer.subscribe(self._changed)
        self._last: object = _UNSET
        self._initial: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        self._initial = asyncio.get_running_loop().create_task(self._report_missing())

    async def stop(self) -> None:
        if self._initial is not None:
            self._initial.cancel()
        await super().stop()

    async def _report_missing(self) -> None:
        # A missing ConfigMap produces no watch event at all; say so once the list is in.
        await self._informer.synced.wait()
        if self._last is _UNSET:
            self._deliver(None, None)

    def _changed(self, kind: str, new: JsonObject | None, old: JsonObject | None) -> None:
        if new is None:
            self._deliver(None, None)
            return
        self._deliver((new.get("data") or {}).get(self._key), new)

    def _deliver(self, text: str | None, configmap: JsonObject | None) -> None:
        if text == self._last:
            return  # a relist or an edit of another key: nothing new for the callback
        self._last = text
        self._on_text(text, configmap)


class RegistryListApplier:
    """The ConfigMapWatch callback for ActiveRegistries; records InvalidRegistryList Events."""

    def __init__(self, config: ActiveRegistries, recorder: EventRecorder | None, *, source: str,
                 on_applied: Callable[[], None] | None = None):
        self._config = config
        self._recorder = recorder
        self._source = source
        self._on_applied = on_applied  # e.g. Refresher.wake: prune and rewrite without waiting
        self._pending: set[asyncio.Task[bool]] = set()

    def __call__(self, text: str | None, configmap: JsonObject | None) -> None:
        if text is None:
            self._config.apply_text_error(f"ConfigMap {self._source} or its key {REGISTRIES_KEY} is missing",
                                          self._source)
            return
        if self._config.apply_text(text, self._source):
            if self._on_applied is not None:
                self._on_applied()
            return
        if self._recorder is None or configmap is None:
            return
        kept = "keeping the last good list" if self._config.ready else "no registry list is active"
        message = f"{REGISTRIES_KEY} rejected, {kept}: " + "; ".join(self._config.errors)
        record = self._recorder.record(ObjectRef.of("ConfigMap", configmap), type="Warning",
                                       reason=INVALID_REASON, message=message)
        task = asyncio.get_running_loop().create_task(record)
        self._pending.add(task)  # keep a reference until done: the loop holds tasks weakly
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for Events still being recorded (tests, shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending))
