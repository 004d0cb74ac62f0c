"""Kubernetes Events on objects regcred cares about (``kubectl describe`` shows them).

core/v1 Events, as client-go's legacy recorder writes them: the name is ``<object>.<unix
nanoseconds in hex>`` so it never collides, and ``source.component`` plus the reporting
fields say who spoke. Recording is best effort: a failure is logged, never raised, because
an Event is never worth failing the work it describes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from webhook.jsontypes import JsonObject
from webhook.kube.client import KubeClient, describe_api_error

log = logging.getLogger(__name__)

_MESSAGE_LIMIT = 1024  # the apiserver rejects longer Event messages


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str
    uid: str | None = None
    api_version: str = "v1"
    resource_version: str | None = None

    @classmethod
    def of(cls, kind: str, obj: JsonObject, api_version: str = "v1") -> ObjectRef:
        """A reference to a raw object; list items carry no kind, so it is given."""
        meta = obj.get("metadata") or {}
        return cls(kind, meta.get("namespace") or "", meta.get("name") or "", meta.get("uid"),
                   api_version, meta.get("resourceVersion"))

    def as_dict(self) -> JsonObject:
        ref = {"kind": self.kind, "namespace": self.namespace, "name": self.name, "apiVersion": self.api_version}
        if self.uid:
            ref["uid"] = self.uid
        if self.resource_version:
            ref["resourceVersion"] = self.resource_version
        return ref


class EventRecorder:
    def __init__(self, client: KubeClient, *, component: str = "regcred", instance: str = "regcred"):
        self._client = client
        self._component = component
        self._instance = instance

    async def record(self, regarding: ObjectRef, *, type: str, reason: str, message: str) -> bool:
        """Create an Event (type Normal or Warning) in the object's namespace; True if written."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{regarding.name}.{time.time_ns():x}", "namespace": regarding.namespace},
            "involvedObject": regarding.as_dict(),
            "type": type,
            "reason": reason,
            "message": message[:_MESSAGE_LIMIT],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._client.call_json(self._client.core.create_namespaced_event, regarding.namespace, event)
        except Exception as exc:
            log.warning("could not record event", extra={
                "reason": reason, "object": f"{regarding.kind}/{regarding.name}", "error": describe_api_error(exc)})
            return False
        return True
