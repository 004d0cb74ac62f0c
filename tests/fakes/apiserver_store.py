"""Object storage with Kubernetes write semantics for the fake API server (test fixture only).

One lock, one global resourceVersion counter (like an etcd revision), and per resource a
dict of entries plus a sorted key list, so get is O(1), list O(n) and a paginated page
O(log n + page). Quirks of the real server reproduced here:

* Order of checks on create: namespace must exist (NamespaceLifecycle admission),
  then validation (422), then storage: an object that carries a resourceVersion fails
  in etcd3 and surfaces as a 500 (the classic error when re-creating an object read
  back earlier), then existence (409 AlreadyExists).
* An update that changes nothing keeps the resourceVersion and emits no watch event.
* PUT on a missing Lease or Event creates it (AllowCreateOnUpdate); a Lease PUT
  without resourceVersion is Invalid (no AllowUnconditionalUpdate).
* Paginated lists are consistent snapshots at the first page's resourceVersion,
  rebuilt from the change history; once that history is gone, 410 Expired.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime

from .apiserver_errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    expired,
    field_error,
    internal,
    invalid,
    not_found,
    terminating,
)
from .apiserver_index import Index, ListPage, decode_continue, encode_continue
from .apiserver_patch import apply_patch
from .apiserver_resources import RESOURCES, STORED, ResourceType, metadata_causes, name_causes
from .apiserver_selectors import Predicate
from .apiserver_watch import Change, Entry, Key, Watcher, WatchHub, bookmark_line, dumps, event_line, render, with_rv

_META_ORDER = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
               "labels", "annotations", "ownerReferences", "finalizers", "managedFields")
_NULLABLE = frozenset({"eventTime", "firstTimestamp", "lastTimestamp"})  # Event times encode null
_GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's SimpleNameGenerator alphabet
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list.")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(obj: dict) -> dict:
    """Field order and omitempty like the Go structs, so equal objects encode equally."""
    meta = {k: v for k, v in obj["metadata"].items() if v not in (None, "", {}, [])}
    ordered = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered.update((k, v) for k, v in meta.items() if k not in ordered)
    rest = {k: v for k, v in obj.items() if k != "metadata"
            and (v is not None or k in _NULLABLE) and not (k in ("data", "binaryData") and v == {})}
    return {"metadata": ordered, **rest}


class Store:
    def __init__(self, history_size: int = 1000, auto_create_namespaces: bool = False):
        self.lock = threading.RLock()
        self.rv = 1
        self.auto_create_namespaces = auto_create_namespaces
        self._index: dict[str, Index] = {r.store_key: Index() for r in RESOURCES}
        self.hub = WatchHub(history_size, self.rv)

    # ---- reads -------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Entry:
        entry = self._index[rtype.store_key].objects.get((namespace or "", name))
        if entry is None:
            raise not_found(rtype.plural, name, rtype.group)
        return entry

    def keys(self, rtype: ResourceType):
        """(namespace, name) of every stored object of the type; a live view."""
        return self._index[rtype.store_key].objects.keys()

    def entries(self, rtype: ResourceType, namespace: str | None = None) -> list[Entry]:
        with self.lock:
            index = self._index[rtype.store_key]
            return [index.objects[key] for key in index.keys_in(namespace)]

    def list(self, rtype: ResourceType, namespace: str | None, predicate: Predicate | None,
             limit: int | None = None, token: str | None = None) -> ListPage:
        with self.lock:
            rv, start, overrides = self.rv, None, {}
            if token:
                rv, start = decode_continue(token, rtype)
                try:
                    overrides = self.hub.state_at(rtype.store_key, rv)
                except ApiError:
                    raise expired(_CONTINUE_TOO_OLD) from None
            index = self._index[rtype.store_key]
            items, last, more = index.page(namespace, predicate, limit, start, overrides)
            if not more:
                return ListPage(items, rv, None, None)
            # Like the real server, the count is only given when no selector filters.
            remaining = None if predicate else index.remaining(namespace, last, overrides)
            return ListPage(items, rv, encode_continue(rv, last, rtype), remaining)

    # ---- writes ------------------------------------------------------------------------

    def create(self, rtype: ResourceType, namespace: str | None, body: dict,
               dry_run: bool = False) -> Entry:
        return self._create_stored(rtype, namespace, self._incoming(rtype, body, namespace),
                                   dry_run)

    def _create_stored(self, rtype: ResourceType, namespace: str | None, obj: dict,
                       dry_run: bool) -> Entry:
        meta = obj["metadata"]
        with self.lock:
            if rtype.namespaced:
                self._require_namespace(namespace or "", rtype, meta.get("name", ""))
            self._name_or_generate(rtype, meta)
            self._validate(rtype, obj, None)
            if meta.get("resourceVersion"):  # etcd3 store.Create checks this before existence
                raise internal("resourceVersion should not be set on objects to be created")
            key = (meta.get("namespace", ""), meta["name"])
            if key in self._index[rtype.store_key].objects:
                raise already_exists(rtype.plural, meta["name"], rtype.group)
            meta.pop("deletionTimestamp", None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
            return self._commit(rtype, key, obj, None, dry_run)

    def update(self, rtype: ResourceType, namespace: str | None, name: str, body: dict,
               dry_run: bool = False, force: bool = False) -> tuple[Entry, bool]:
        """PUT semantics; returns the stored entry and whether it was created."""
        obj = self._incoming(rtype, body, namespace)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name', '')}) does not "
                              f"match the name on the URL ({name})")
        with self.lock:
            key = (meta.get("namespace", ""), name)
            old = self._index[rtype.store_key].objects.get(key)
            if old is None:
                if not rtype.create_on_update:
                    raise not_found(rtype.plural, name, rtype.group)
                meta.pop("resourceVersion", None)
                return self._create_stored(rtype, namespace, obj, dry_run), True
            if not force:
                _check_update(rtype, old, meta)
            old_meta = old.obj["metadata"]
            for field in ("uid", "creationTimestamp", "deletionTimestamp", "resourceVersion"):
                meta.pop(field, None)
                if field in old_meta:
                    meta[field] = old_meta[field]
            self._validate(rtype, obj, old)
            obj = _canonical(obj)
            if obj == old.obj:
                return old, False
            return self._commit(rtype, key, obj, old, dry_run), False

    def patch(self, rtype: ResourceType, namespace: str | None, name: str,
              content_type: str, body: bytes, dry_run: bool = False) -> Entry:
        with self.lock:
            current = json.loads(render(rtype, self.get(rtype, namespace, name)))
            patched = apply_patch(content_type, current, body)
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            return self.update(rtype, namespace, name, patched, dry_run)[0]

    def delete(self, rtype: ResourceType, namespace: str | None, name: str,
               options: dict | None = None, dry_run: bool = False) -> Entry:
        with self.lock:
            old = self.get(rtype, namespace, name)
            _check_delete(rtype, old, (options or {}).get("preconditions") or {})
            if dry_run:
                return old
            if rtype.plural == "namespaces":
                return self._delete_namespace(rtype, old)
            return self._remove(rtype, (namespace or "", name), old)

    def _delete_namespace(self, rtype: ResourceType, old: Entry) -> Entry:
        # The real server marks the namespace Terminating and returns it; it refuses new content
        # from then on, until its namespace controller has deleted the contents and then the
        # namespace (``finish_namespace_deletion`` does that controller's work).
        terminating = json.loads(old.raw)
        terminating["metadata"]["deletionTimestamp"] = terminating["metadata"].get("deletionTimestamp") or now()
        terminating["status"] = {"phase": "Terminating"}
        return self._commit(rtype, ("", terminating["metadata"]["name"]), terminating, old, False)

    def finish_namespace_deletion(self, name: str) -> None:
        with self.lock:
            rtype = STORED["namespaces"]
            entry = self._index["namespaces"].objects.get(("", name))
            if entry is None or not entry.obj["metadata"].get("deletionTimestamp"):
                raise ValueError(f"namespace {name} is not being deleted")
            for store_key, index in self._index.items():
                if store_key != "namespaces":
                    for key in index.keys_in(name):
                        self._remove(STORED[store_key], key, index.objects[key])
            self._remove(rtype, ("", name), entry)

    def _commit(self, rtype: ResourceType, key: Key, obj: dict, prev: Entry | None,
                dry_run: bool) -> Entry:
        if dry_run:  # validated and defaulted, never stored, no resourceVersion consumed
            obj = _canonical(obj)
            return Entry(obj, dumps(obj))
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj = _canonical(obj)
        entry = Entry(obj, dumps(obj))
        self._index[rtype.store_key].put(key, entry)
        kind = "ADDED" if prev is None else "MODIFIED"
        self.hub.publish(Change(self.rv, rtype.store_key, key, kind, entry, prev))
        return entry

    def _remove(self, rtype: ResourceType, key: Key, prev: Entry) -> Entry:
        self.rv += 1
        tombstone = with_rv(prev, self.rv)
        self._index[rtype.store_key].remove(key)
        self.hub.publish(Change(self.rv, rtype.store_key, key, "DELETED", tombstone, prev))
        return tombstone

    # ---- helpers -----------------------------------------------------------------------

    def _incoming(self, rtype: ResourceType, body: object, namespace: str | None) -> dict:
        if not isinstance(body, dict):
            raise bad_request(f"{rtype.kind} in version \"{rtype.version}\" cannot be handled "
                              f"as a {rtype.kind}: expected a JSON object")
        for field, expected in (("kind", rtype.kind), ("apiVersion", rtype.api_version)):
            if body.get(field) and body[field] != expected:
                raise bad_request(f"{field} {body[field]!r} of the object does not match "
                                  f"the expected {expected!r}")
        # A JSON round trip is the deep copy: faster than copy.deepcopy, and it turns what
        # the wire could not carry (datetimes from put_object) into strings.
        obj = json.loads(json.dumps(
            {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}, default=str))
        if rtype.to_storage is not None:
            obj = rtype.to_storage(obj)
        meta = obj["metadata"] = dict(obj.get("metadata") or {})
        # EnsureObjectNamespaceMatchesRequestNamespace: fill in, clear for cluster scope,
        # or refuse a mismatch.
        if not rtype.namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = namespace or ""
        elif meta["namespace"] != namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        return obj

    def _require_namespace(self, namespace: str, rtype: ResourceType, name: str) -> None:
        entry = self._index["namespaces"].objects.get(("", namespace))
        if entry is not None:
            if entry.obj["metadata"].get("deletionTimestamp"):
                raise terminating(namespace, rtype.plural, rtype.group, name)
            return
        if not self.auto_create_namespaces:
            raise not_found("namespaces", namespace)
        self.create(STORED["namespaces"], None, {"metadata": {"name": namespace}})

    def _name_or_generate(self, rtype: ResourceType, meta: dict) -> None:
        if meta.get("name"):
            return
        prefix = meta.get("generateName")
        if not prefix:
            raise invalid(rtype.kind, "", [field_error(
                "metadata.name", "Required", detail="name or generateName is required")],
                rtype.group)
        objects = self._index[rtype.store_key].objects
        while True:
            name = prefix + "".join(random.choices(_GENERATED_CHARS, k=5))
            if (meta.get("namespace", ""), name) not in objects:
                meta["name"] = name
                return

    def _validate(self, rtype: ResourceType, obj: dict, old: Entry | None) -> None:
        meta = obj["metadata"]
        causes = name_causes(meta["name"], rtype.name_rule) + metadata_causes(meta)
        causes += rtype.prepare(obj, old.obj if old else None)
        if causes:
            raise invalid(rtype.kind, meta["name"], causes, rtype.group)

    # ---- watch -------------------------------------------------------------------------

    def watch(self, rtype: ResourceType, namespace: str | None, predicate: Predicate | None,
              resource_version: str | None, loop) -> tuple[Watcher, list[bytes]]:
        """Register a watcher; returns it with the events to send before live ones.

        No resourceVersion (or "0") means "current state, then changes": every existing
        object arrives as a synthetic ADDED event first.
        """
        watcher = Watcher(rtype, namespace, predicate, loop)
        with self.lock:
            if resource_version in (None, "", "0"):
                index = self._index[rtype.store_key]
                backlog = [event_line("ADDED", rtype, index.objects[key])
                           for key in index.keys_in(namespace)
                           if watcher.selects(key, index.objects[key])]
            else:
                changes = self.hub.since(_parse_rv(resource_version))
                backlog = [line for change in changes if change.store_key == rtype.store_key
                           and (line := watcher.line_for(change)) is not None]
            self.hub.add(watcher)
        return watcher, backlog

    def bookmark(self, watcher: Watcher) -> None:
        # Under the lock, so the bookmark is queued after every event it claims to cover.
        with self.lock:
            watcher.push(bookmark_line(watcher.rtype, self.rv))

    def unwatch(self, watcher: Watcher) -> None:
        with self.lock:
            self.hub.remove(watcher)


def _check_update(rtype: ResourceType, old: Entry, meta: dict) -> None:
    name, old_meta = meta["name"], old.obj["metadata"]
    rv = meta.get("resourceVersion")
    if not rv and not rtype.unconditional_update:
        raise invalid(rtype.kind, name, [field_error(
            "metadata.resourceVersion", "Invalid", shown="0x0",
            detail="must be specified for an update")], rtype.group)
    if rv and rv != old_meta["resourceVersion"]:
        raise conflict(rtype.plural, name, rtype.group)
    if meta.get("uid") and meta["uid"] != old_meta["uid"]:
        raise conflict(rtype.plural, name, rtype.group,
                       f"Precondition failed: UID in precondition: {meta['uid']}, "
                       f"UID in object meta: {old_meta['uid']}")


def _check_delete(rtype: ResourceType, old: Entry, preconditions: dict) -> None:
    old_meta = old.obj["metadata"]
    for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field)
        if wanted and wanted != old_meta.get(field):
            raise conflict(rtype.plural, old_meta["name"], rtype.group,
                           f"Precondition failed: {label} in precondition: {wanted}, "
                           f"{label} in object meta: {old_meta.get(field)}")


def _parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'resourceVersion: Invalid value: "{value}": '
                          "must be a non-negative integer") from None
