"""ASGI application of the fake API server (test fixture only).

A bare ASGI app (served by uvicorn, see ``apiserver.py``): each request is resolved to a
verb and resource, passes the injected latency/hang, authentication, injected failures
and authorization in that order, is logged, and is answered from the ``Store``.

Kubernetes quirks reproduced here:

* create answers 201; an update that created the object (Lease, Event) answers 201 too.
* DELETE of a namespaced object answers a ``Status`` whose ``details.kind`` is the
  resource plural; DELETE of a Namespace answers the Namespace itself (Terminating).
* Watch is HTTP 200 with newline-delimited JSON events; a too-old resourceVersion
  is not an HTTP error but one ``ERROR`` event carrying a 410 Status.
* List items carry no ``kind``/``apiVersion``; the list itself does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .apiserver_control import RequestRecord
from .apiserver_errors import ApiError, forbidden, injected, internal, path_not_found, unauthorized
from .apiserver_routes import HEALTH_PATHS, Request, Route, resolve
from .apiserver_selectors import combine, field_selector, label_selector
from .apiserver_watch import Watcher, dumps, list_item, render

if TYPE_CHECKING:
    from .apiserver import FakeApiServer

logger = logging.getLogger(__name__)
JSON = "application/json"
_BATCH = 1000  # events per write when draining a watch queue or a backlog


class ApiApp:
    def __init__(self, server: FakeApiServer):
        self.server = server
        self.store = server.store

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, await _read_body(receive), time.time())
        route = resolve(request, self.server.address)
        headers: dict[str, str] = {}
        try:
            await self._admit(request, route)
            if route is None:
                raise path_not_found()
            if route.verb == "watch":
                await self._watch(request, route, send, receive)
                return
            status, payload, content_type = self._dispatch(request, route)
        except ApiError as error:
            status, payload, content_type = error.code, dumps(error.status), JSON
            headers = error.headers
        except Exception as error:  # a bug in the fake: answer like a crashing apiserver
            logger.exception("fake API server failed on %s %s", request.method, request.path)
            status, payload, content_type = 500, dumps(internal(repr(error)).status), JSON
        self._record(request, route, status)
        await _respond(send, status, payload, content_type, headers)

    async def _admit(self, request: Request, route: Route | None) -> None:
        server = self.server
        target = route.target if route else (request.method.lower(), None, None, None)
        if server.latency > 0:
            await asyncio.sleep(server.latency)
        hang = server.faults.take("hangs", *target)
        if hang is not None:
            await asyncio.sleep(hang.seconds)
        if request.path in HEALTH_PATHS:
            return
        if server.token and request.headers.get("authorization") != f"Bearer {server.token}":
            raise unauthorized()
        failure = server.faults.take("failures", *target)
        if failure is not None:
            raise injected(failure.status, failure.retry_after)
        if route and route.rtype and server.faults.take("denials", *target):
            raise forbidden(server.user, route.verb, route.rtype.plural, route.group,
                            route.namespace, route.name)

    def _record(self, request: Request, route: Route | None, status: int) -> None:
        verb, resource, namespace, name = (route.target if route
                                           else (request.method.lower(), None, None, None))
        self.server.log.add(RequestRecord(
            verb, resource, namespace, name, status, request.started,
            time.time() - request.started, request.method, request.path,
            request.query_string, route.group if route else ""))

    def _dispatch(self, request: Request, route: Route) -> tuple[int, bytes, str]:
        if route.document is not None:
            if isinstance(route.document, str):
                return 200, route.document.encode(), "text/plain"
            return 200, dumps(route.document), JSON
        rtype, namespace, name = route.rtype, route.namespace, route.name
        dry_run = request.query.get("dryRun") == "All"
        store = self.store
        if route.verb == "get":
            return 200, render(rtype, store.get(rtype, namespace, name)), JSON
        if route.verb == "list":
            return 200, self._list(request, route), JSON
        if route.verb == "create":
            entry = store.create(rtype, namespace, request.json(), dry_run)
            return 201, render(rtype, entry), JSON
        if route.verb == "update":
            entry, created = store.update(rtype, namespace, name, request.json(), dry_run)
            return (201 if created else 200), render(rtype, entry), JSON
        if route.verb == "patch":
            content_type = request.headers.get("content-type", "")
            entry = store.patch(rtype, namespace, name, content_type, request.body, dry_run)
            return 200, render(rtype, entry), JSON
        if route.verb == "delete":
            return 200, self._delete(request, route, dry_run), JSON
        return 200, self._delete_collection(request, route, dry_run), JSON

    def _predicate(self, request: Request, route: Route):
        return combine(label_selector(request.query.get("labelSelector")),
                       field_selector(request.query.get("fieldSelector"), route.rtype.fields))

    def _list(self, request: Request, route: Route) -> bytes:
        rtype = route.rtype
        page = self.store.list(rtype, route.namespace, self._predicate(request, route),
                               request.integer("limit"), request.query.get("continue") or None)
        meta: dict[str, object] = {"resourceVersion": str(page.rv)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        head = dumps({"kind": rtype.kind + "List", "apiVersion": rtype.api_version,
                      "metadata": meta})[:-1]
        items = b",".join(list_item(rtype, entry) for entry in page.items)
        return head + b',"items":[' + items + b"]}"

    def _delete(self, request: Request, route: Route, dry_run: bool) -> bytes:
        rtype = route.rtype
        options = request.json() if request.body else {}
        entry = self.store.delete(rtype, route.namespace, route.name,
                                  options if isinstance(options, dict) else {}, dry_run)
        if rtype.plural == "namespaces":
            return render(rtype, entry)
        details = {"name": route.name, "group": rtype.group, "kind": rtype.plural,
                   "uid": entry.obj["metadata"]["uid"]}
        if not rtype.group:
            del details["group"]
        return dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "details": details})

    def _delete_collection(self, request: Request, route: Route, dry_run: bool) -> bytes:
        rtype = route.rtype
        with self.store.lock:
            page = self.store.list(rtype, route.namespace, self._predicate(request, route))
            deleted = [self.store.delete(rtype, e.obj["metadata"].get("namespace"),
                                         e.obj["metadata"]["name"], None, dry_run)
                       for e in page.items]
            rv = self.store.rv
        head = dumps({"kind": rtype.kind + "List", "apiVersion": rtype.api_version,
                      "metadata": {"resourceVersion": str(rv)}})[:-1]
        return head + b',"items":[' + b",".join(list_item(rtype, e) for e in deleted) + b"]}"

    async def _watch(self, request: Request, route: Route, send, receive) -> None:
        predicate = self._predicate(request, route)
        loop = asyncio.get_running_loop()
        watcher: Watcher | None = None
        try:
            watcher, backlog = self.store.watch(route.rtype, route.namespace, predicate,
                                                request.query.get("resourceVersion"), loop)
        except ApiError as error:
            if error.code != 410:
                raise
            backlog = [b'{"type":"ERROR","object":' + dumps(error.status) + b"}\n"]
        self._record(request, route, 200)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", JSON.encode())]})
        timeout = request.integer("timeoutSeconds") or self.server.watch_timeout
        deadline = loop.time() + timeout
        disconnect = asyncio.ensure_future(_on_disconnect(receive, watcher))
        try:
            for start in range(0, len(backlog), _BATCH):
                await _chunk(send, b"".join(backlog[start:start + _BATCH]))
            if watcher is not None:
                await self._pump(watcher, send, deadline, request.flag("allowWatchBookmarks"))
            await _chunk(send, b"", more=False)
        except OSError:  # the client went away mid-write
            pass
        except Exception:  # a bug in the fake, after the 200 went out: just end the stream
            logger.exception("fake API server watch stream failed")
        finally:
            disconnect.cancel()
            if watcher is not None:
                self.store.unwatch(watcher)

    async def _pump(self, watcher: Watcher, send, deadline: float, bookmarks: bool) -> None:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            wait = min(remaining, self.server.bookmark_interval) if bookmarks else remaining
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if bookmarks and deadline - loop.time() > 0:
                    self.store.bookmark(watcher)
                continue
            batch = []
            while item is not None:
                batch.append(item)
                if watcher.queue.empty() or len(batch) >= _BATCH:
                    break
                item = watcher.queue.get_nowait()
            if batch:
                await _chunk(send, b"".join(batch))
            if item is None:
                return


async def _on_disconnect(receive, watcher: Watcher | None) -> None:
    # Once the request body is consumed, receive() only returns when the client is gone.
    while (await receive())["type"] != "http.disconnect":
        pass
    if watcher is not None:
        watcher.push(None)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _chunk(send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _respond(send, status: int, payload: bytes, content_type: str,
                   headers: dict[str, str]) -> None:
    raw = [(b"content-type", content_type.encode()),
           (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})

