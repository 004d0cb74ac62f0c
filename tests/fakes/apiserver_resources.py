"""Resource types and their server-side rules for the fake API server (test fixture only).

Each ``ResourceType`` carries what the real registry strategy decides: scope, whether
PUT may create (``AllowCreateOnUpdate``) or may omit resourceVersion
(``AllowUnconditionalUpdate``), the indexed field selectors, and a ``prepare`` hook that
defaults, normalizes and validates an object before it is stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .apiserver_errors import bad_request, field_error

Causes = list[dict]

_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+\Z")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                  "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                  "is '[-._a-zA-Z0-9]+')")
MAX_DATA_BYTES = 1024 * 1024
BASE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
# Keys the Secret validation requires for each well-known type.
SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


@dataclass(frozen=True)
class ResourceType:
    group: str
    kind: str
    plural: str
    namespaced: bool
    prepare: Callable[[dict, dict | None], Causes]
    storage: str = ""
    create_on_update: bool = False
    unconditional_update: bool = True
    name_rule: str = "subdomain"
    fields: frozenset[str] = BASE_FIELDS
    to_storage: Callable[[dict], dict] | None = None
    from_storage: Callable[[dict], dict] | None = None
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def store_key(self) -> str:
        return self.storage or self.plural

    @property
    def type_prefix(self) -> bytes:
        return f'{{"kind":"{self.kind}","apiVersion":"{self.api_version}",'.encode()


def name_causes(name: str, rule: str) -> Causes:
    pattern, message, limit = ((_LABEL, LABEL_MSG, 63) if rule == "label"
                               else (_SUBDOMAIN, SUBDOMAIN_MSG, 253))
    causes = []
    if not pattern.match(name):
        causes.append(field_error("metadata.name", "Invalid", name, message))
    if len(name) > limit:
        causes.append(field_error("metadata.name", "Invalid", name,
                                  f"must be no more than {limit} characters"))
    return causes


def _qualified_key_causes(field: str, key: str) -> Causes:
    prefix, slash, name = key.rpartition("/")
    if (slash and not (prefix and _SUBDOMAIN.match(prefix) and len(prefix) <= 253)) \
            or not _QUALIFIED_NAME.match(name) or len(name) > 63:
        return [field_error(field, "Invalid", key,
                            "name part must consist of alphanumeric characters, '-', '_' or '.', "
                            "and must start and end with an alphanumeric character")]
    return []


def metadata_causes(meta: dict) -> Causes:
    causes: Causes = []
    for key, value in (meta.get("labels") or {}).items():
        causes += _qualified_key_causes("metadata.labels", key)
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
            causes.append(field_error("metadata.labels", "Invalid", value,
                                      "a valid label must be an empty string or consist of "
                                      "alphanumeric characters, '-', '_' or '.', and must start "
                                      "and end with an alphanumeric character"))
    for key in meta.get("annotations") or {}:
        causes += _qualified_key_causes("metadata.annotations", key)
    return causes


def normalize_time(value: str | None, micro: bool) -> str | None:
    """metav1.Time has second precision and MicroTime microseconds, both rendered in UTC 'Z'."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as error:
        raise bad_request(f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse') from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _normalize_times(obj: dict, paths: tuple[str, ...], micro: bool) -> None:
    for path in paths:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) is not None:
            node[leaf] = normalize_time(node[leaf], micro)


def _data_causes(field: str, data: dict, other: dict | None = None) -> Causes:
    causes = []
    for key in data:
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            causes.append(field_error(f"{field}[{key}]", "Invalid", key, CONFIG_KEY_MSG))
        elif other and key in other:
            causes.append(field_error(f"{field}[{key}]", "Invalid", key,
                                      "duplicate of key present in binaryData"))
    return causes


def _immutable_causes(obj: dict, old: dict | None, fields: tuple[str, ...]) -> Causes:
    if not old or not old.get("immutable"):
        return []
    message = "field is immutable when `immutable` is set"
    causes = [field_error(f, "Forbidden", detail=message)
              for f in fields if (obj.get(f) or {}) != (old.get(f) or {})]
    if not obj.get("immutable"):
        causes.append(field_error("immutable", "Forbidden", detail=message))
    return causes


def _decode_secret_data(data: dict) -> dict[str, bytes]:
    # Secret data is []byte in Go: JSON carries base64, and a bad value fails decoding
    # of the whole request (400), before any validation runs.
    decoded = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as error:
            raise bad_request(f'Secret in version "v1" cannot be handled as a Secret: '
                              f"illegal base64 data in data[{key}]: {error}") from error
    return decoded


def prepare_secret(obj: dict, old: dict | None) -> Causes:
    # stringData is write-only: merged over data (it wins) and never stored or returned.
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    decoded = _decode_secret_data(data)
    obj["data"] = data
    if not data:
        del obj["data"]
    obj["type"] = obj.get("type") or "Opaque"
    causes = _data_causes("data", data)
    for key in SECRET_REQUIRED_KEYS.get(obj["type"], ()):
        if key not in data:
            causes.append(field_error(f"data[{key}]", "Required"))
    if obj["type"] == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" in decoded:
        try:
            json.loads(decoded[".dockerconfigjson"])
        except ValueError as error:
            causes.append(field_error("data[.dockerconfigjson]", "Invalid",
                                      "<secret contents redacted>", str(error)))
    if sum(len(v) for v in decoded.values()) > MAX_DATA_BYTES:
        causes.append(field_error("data", "TooLong",
                                  detail=f"must have at most {MAX_DATA_BYTES} bytes"))
    if old is not None and old.get("type") != obj["type"]:
        causes.append(field_error("type", "Invalid", obj["type"], "field is immutable"))
    return causes + _immutable_causes(obj, old, ("data",))


def prepare_configmap(obj: dict, old: dict | None) -> Causes:
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    causes = _data_causes("data", data, binary) + _data_causes("binaryData", binary)
    size = sum(len(str(v).encode()) for v in data.values())
    size += sum(len(str(v)) * 3 // 4 for v in binary.values())
    if size > MAX_DATA_BYTES:
        causes.append(field_error("", "TooLong",
                                  detail=f"must have at most {MAX_DATA_BYTES} bytes"))
    return causes + _immutable_causes(obj, old, ("data", "binaryData"))


def prepare_namespace(obj: dict, old: dict | None) -> Causes:
    meta = obj["metadata"]
    # Since 1.21 every namespace carries an immutable label with its own name.
    meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    # status is a subresource: create starts Active, PUT/PATCH on the main resource keep it.
    obj["status"] = dict(old["status"]) if old and "status" in old else {"phase": "Active"}
    return []


def prepare_lease(obj: dict, old: dict | None) -> Causes:
    spec = obj.get("spec") or {}
    _normalize_times(obj, ("spec.acquireTime", "spec.renewTime"), micro=True)
    causes = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        causes.append(field_error("spec.leaseDurationSeconds", "Invalid", duration,
                                  "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        causes.append(field_error("spec.leaseTransitions", "Invalid", transitions,
                                  "must be greater than or equal to 0"))
    return causes


def prepare_event(obj: dict, old: dict | None, controller_field: str = "reportingComponent"
                  ) -> Causes:
    """core/v1 Events get only the legacy checks (ValidateEventCreate, legacyValidateEvent)."""
    _normalize_times(obj, ("firstTimestamp", "lastTimestamp"), micro=False)
    _normalize_times(obj, ("eventTime", "series.lastObservedTime"), micro=True)
    # Zero metav1.Time/MicroTime values encode as null and these strings lack omitempty,
    # so a real server returns them even when nobody set them.
    for field in ("eventTime", "firstTimestamp", "lastTimestamp"):
        obj.setdefault(field, None)
    for field in ("reportingComponent", "reportingInstance"):
        obj.setdefault(field, "")
    namespace = obj["metadata"].get("namespace", "")
    involved = (obj.get("involvedObject") or {}).get("namespace", "")
    mismatch = field_error("involvedObject.namespace", "Invalid", involved,
                           "does not match event.namespace")
    if not obj["eventTime"]:
        return [mismatch] if involved != namespace and (involved or namespace != "default") else []
    causes = [mismatch] if not involved and namespace not in ("default", "kube-system") else []
    for field, name in ((controller_field, "reportingComponent"),
                        ("reportingInstance", "reportingInstance"), ("action", "action")):
        if not obj.get(name):
            causes.append(field_error(field, "Required"))
    return causes


def prepare_events_v1(obj: dict, old: dict | None) -> Causes:
    """events.k8s.io/v1 creates also get the strict checks; both lists are reported."""
    causes = prepare_event(obj, old, controller_field="reportingController")
    if old is not None:
        return causes
    if not obj["eventTime"]:
        causes.append(field_error("eventTime", "Required"))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(field_error("type", "Invalid", "",
                                  f"has invalid value: {obj.get('type') or ''}"))
    for field, name in (("reportingController", "reportingComponent"),
                        ("reportingInstance", "reportingInstance"),
                        ("action", "action"), ("reason", "reason")):
        if not obj.get(name):
            causes.append(field_error(field, "Required"))
    return causes


# events.k8s.io/v1 is another view of the same stored core/v1 Events (one etcd key space),
# with renamed fields; the real server converts on every read and write.
_CORE_TO_EVENTS_V1 = {
    "involvedObject": "regarding", "message": "note", "source": "deprecatedSource",
    "count": "deprecatedCount", "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp", "reportingComponent": "reportingController",
}
_EVENTS_V1_TO_CORE = {v: k for k, v in _CORE_TO_EVENTS_V1.items()}


def event_to_v1(obj: dict) -> dict:
    return {_CORE_TO_EVENTS_V1.get(k, k): v for k, v in obj.items()}


def event_to_core(obj: dict) -> dict:
    return {_EVENTS_V1_TO_CORE.get(k, k): v for k, v in obj.items()}


_EVENT_FIELDS = BASE_FIELDS | {
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"}

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "Namespace", "namespaces", False, prepare_namespace, name_rule="label",
                 fields=BASE_FIELDS | {"status.phase"}),
    ResourceType("", "Secret", "secrets", True, prepare_secret,
                 fields=BASE_FIELDS | {"type"}),
    ResourceType("", "ConfigMap", "configmaps", True, prepare_configmap),
    ResourceType("", "Event", "events", True, prepare_event, create_on_update=True,
                 fields=_EVENT_FIELDS),
    ResourceType("events.k8s.io", "Event", "events", True, prepare_events_v1,
                 create_on_update=True,
                 fields=_EVENT_FIELDS, to_storage=event_to_core, from_storage=event_to_v1),
    ResourceType("coordination.k8s.io", "Lease", "leases", True, prepare_lease,
                 create_on_update=True, unconditional_update=False),
)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
STORED = {r.store_key: r for r in RESOURCES if r.to_storage is None}


def lookup(resource: str) -> ResourceType:
    """The storage-form type for a plural name, for direct (non-HTTP) store access."""
    try:
        return STORED[resource]
    except KeyError:
        raise KeyError(f"unknown resource {resource!r}; known: {sorted(STORED)}") from None
