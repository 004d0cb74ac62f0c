"""Helpers for the fake API server's own tests (tests/fakeapi/; their fixtures are in its conftest).

Every test drives the real ``kubernetes`` client over HTTPS against ``FakeApiServer``.
"""

from __future__ import annotations

from kubernetes.watch import Watch

NS = "default"


def secret(name: str, labels: dict | None = None, **fields: object) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, **fields}


def names(items: list) -> list[str]:
    return [item.metadata.name for item in items]


def watch_events(func, *args, count: int, **kwargs) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first ``count`` events of a real client watch."""
    watch, events = Watch(), []
    for event in watch.stream(func, *args, **kwargs):
        meta = event["raw_object"]["metadata"]
        events.append((event["type"], meta.get("name"), meta["resourceVersion"]))
        if len(events) == count:
            watch.stop()
    return events
