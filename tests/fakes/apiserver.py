"""In-process fake Kubernetes API server. A TEST FIXTURE ONLY: never imported by regcred.

There is no kube-apiserver binary where regcred's tests run, so this module serves the
parts of the Kubernetes API regcred uses (core/v1 namespaces, secrets, configmaps,
events; coordination.k8s.io/v1 leases; events.k8s.io/v1 events) over real HTTPS, for
the real ``kubernetes`` client to talk to::

    with FakeApiServer() as server:
        core = kubernetes.client.CoreV1Api(server.api_client())
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
        assert server.count(verb="create", resource="secrets") == 1

It is uvicorn in a background thread with its own event loop, so streaming watches
and a thousand concurrent requests cost one thread. Semantics (resourceVersions,
conflicts, validation, selectors, pagination, watch) live in ``apiserver_store`` and
friends; this module is the lifecycle, TLS, kubeconfig, and the test-facing controls
(fault injection, request log, direct store access).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time

import trustme
import uvicorn

from .apiserver_control import Faults, RequestLog, RequestRecord, Rule
from .apiserver_errors import ApiError
from .apiserver_http import ApiApp
from .apiserver_resources import lookup
from .apiserver_store import Store
from .apiserver_watch import render

# What a fresh kubeadm cluster has.
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class _Uvicorn(uvicorn.Server):
    """uvicorn that stops at once: no 0.1 s exit polling, no draining of connections.

    A graceful TLS close waits for the client's close_notify, which idle pooled client
    connections never send; a test fixture should rather abort them.
    """

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.exit_event = asyncio.Event()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # fills the default response headers
        await self.exit_event.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.transport.abort()
        for server in self.servers:
            await server.wait_closed()
        tasks = list(self.server_state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=1)
            for task in tasks:
                task.cancel()


class FakeApiServer:
    """A fake kube-apiserver on https://127.0.0.1:<ephemeral port>; see the module docstring."""

    def __init__(self, *, namespaces: tuple[str, ...] = DEFAULT_NAMESPACES,
                 auto_create_namespaces: bool = False, history_size: int = 1000,
                 latency: float = 0.0, watch_timeout: float = 1800.0,
                 bookmark_interval: float = 1.0, token: str | None = None,
                 user: str = "system:serviceaccount:regcred:regcred"):
        self.store = Store(history_size, auto_create_namespaces)
        self.faults = Faults()
        self.log = RequestLog()
        self.latency = latency                  # seconds added to every request
        self.watch_timeout = watch_timeout      # server-side cap when timeoutSeconds is absent
        self.bookmark_interval = bookmark_interval  # idle seconds between BOOKMARK events
        self.token = token or secrets.token_urlsafe(24)
        self.user = user                        # shown in Forbidden messages
        self.address = ""
        self.ca_pem = b""
        self._tmp: str | None = None
        self._thread: threading.Thread | None = None
        self._uvicorn: _Uvicorn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for name in namespaces:
            self.add_namespace(name)

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def auto_create_namespaces(self) -> bool:
        return self.store.auto_create_namespaces

    @auto_create_namespaces.setter
    def auto_create_namespaces(self, value: bool) -> None:
        self.store.auto_create_namespaces = value

    def start(self) -> FakeApiServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._tmp = tempfile.mkdtemp(prefix="fake-apiserver-")
        ca = trustme.CA()
        self.ca_pem = ca.cert_pem.bytes()
        server_pem = os.path.join(self._tmp, "server.pem")
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            server_pem)
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every response costs a 40 ms delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{sock.getsockname()[1]:d}"
        config = uvicorn.Config(
            ApiApp(self), ssl_certfile=server_pem, ssl_keyfile=server_pem, lifespan="off",
            # No logging configuration: the product under test may run uvicorn in this process.
            log_config=None, log_level=None, access_log=False, backlog=4096,
            timeout_keep_alive=30)
        self._uvicorn = _Uvicorn(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,),
                                        name=f"fake-apiserver-{self.address}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake API server failed to start")
            time.sleep(0.005)
        return self

    def _serve(self, sock: socket.socket) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._uvicorn.serve(sockets=[sock]))
        finally:
            loop.close()
            sock.close()

    def stop(self) -> None:
        if self._thread is None:
            return
        self.drop_watches()
        self._uvicorn.should_exit = True
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._uvicorn.exit_event.set)
            except RuntimeError:  # the loop already ended
                pass
        self._thread.join(timeout=10)
        self._thread = self._loop = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- clients -------------------------------------------------------------------------

    def kubeconfig(self, path: str | os.PathLike) -> str:
        """Write a kubeconfig (server URL, CA data, bearer token) to ``path``; returns it."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {
                "cluster": "fake", "user": "fake", "namespace": "default"}}],
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)  # JSON is YAML, which kubeconfig loaders read
        return os.fspath(path)

    def api_client(self, **configuration: object):
        """A ``kubernetes.client.ApiClient`` loaded from this server's kubeconfig.

        Keyword arguments are set on the client ``Configuration`` (for example
        ``connection_pool_maxsize=50`` or ``client_go_retries=True``).
        """
        import kubernetes  # the fake itself does not need the client; only this helper does

        if self._tmp is None:
            raise RuntimeError("start the server first")
        path = self.kubeconfig(os.path.join(self._tmp, "kubeconfig"))
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=path, client_configuration=config,
                                           temp_file_path=self._tmp)
        for key, value in configuration.items():
            setattr(config, key, value)
        return kubernetes.client.ApiClient(config)

    # ---- direct store access (no HTTP, not logged) -----------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self.store.rv)

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        """Create the namespace, or replace its labels when ``labels`` is given."""
        existing = self.get_object("namespaces", None, name)
        if existing is not None and labels is None:
            return existing
        return self.put_object("namespaces", {"metadata": {"name": name,
                                                           "labels": dict(labels or {})}})

    def finish_namespace_deletion(self, name: str) -> None:
        """What kube-controller-manager's namespace controller does to a Terminating namespace:
        delete its contents, then the namespace."""
        self.store.finish_namespace_deletion(name)

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict | None:
        rtype = lookup(resource)
        try:
            return json.loads(render(rtype, self.store.get(rtype, namespace, name)))
        except ApiError:
            return None

    def put_object(self, resource: str, obj: dict, namespace: str | None = None) -> dict:
        """Create or replace as another client would: new resourceVersion, watchers notified.

        Validation applies (raises ``ApiError``); a stale resourceVersion does not.
        """
        rtype = lookup(resource)
        body = {**obj, "metadata": dict(obj.get("metadata") or {})}  # the store deep-copies
        meta = body["metadata"]
        if namespace is not None:
            meta["namespace"] = namespace
        namespace = meta.get("namespace") if rtype.namespaced else None
        if rtype.namespaced and not namespace:
            raise ValueError(f"{resource} are namespaced: give a namespace")
        with self.store.lock:
            name = meta.get("name")
            if name and (namespace or "", name) in self.store.keys(rtype):
                entry = self.store.update(rtype, namespace, name, body, force=True)[0]
            else:
                meta.pop("resourceVersion", None)
                entry = self.store.create(rtype, namespace, body)
        return json.loads(render(rtype, entry))

    def delete_object(self, resource: str, namespace: str | None, name: str) -> bool:
        rtype = lookup(resource)
        try:
            self.store.delete(rtype, namespace, name)
        except ApiError:
            return False
        return True

    def objects(self, resource: str, namespace: str | None = None) -> list[dict]:
        rtype = lookup(resource)
        return [json.loads(render(rtype, entry)) for entry in self.store.entries(rtype, namespace)]

    # ---- fault injection -----------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, verb: str | None = None,
                  resource: str | None = None, retry_after: int | None = None, *,
                  namespace: str | None = None, name: str | None = None) -> Rule:
        """Answer the next ``n`` matching requests with ``status`` (and Retry-After)."""
        return self.faults.add("failures", Rule(verb, resource, namespace, name, remaining=n,
                                                status=status, retry_after=retry_after))

    def hang_next(self, n: int = 1, seconds: float = 30.0, verb: str | None = None,
                  resource: str | None = None, *, namespace: str | None = None,
                  name: str | None = None) -> Rule:
        """Delay the next ``n`` matching requests by ``seconds``, then serve them normally.

        Like a real slow server, a request the client gave up on still takes effect.
        """
        return self.faults.add("hangs", Rule(verb, resource, namespace, name, remaining=n,
                                             seconds=seconds))

    def forbid(self, verb: str | None = None, resource: str | None = None,
               namespace: str | None = None, name: str | None = None) -> Rule:
        """Deny matching requests with 403 Forbidden (an RBAC gap) until ``allow``."""
        return self.faults.add("denials", Rule(verb, resource, namespace, name))

    def allow(self, rule: Rule | None = None) -> None:
        """Remove one ``forbid`` rule, or all of them."""
        self.faults.remove("denials", rule)

    def clear_faults(self) -> None:
        for kind in ("failures", "hangs", "denials"):
            self.faults.remove(kind)

    def drop_watches(self) -> int:
        """End every open watch stream (as an apiserver restart would); returns how many."""
        with self.store.lock:
            return self.store.hub.close_all()

    def expire_watches(self) -> int:
        """Compact history and end every open watch with a 410 Expired ERROR event; a watch
        resumed from an older resourceVersion gets 410 too, so clients must relist.

        A fault, not what a compaction does on a real API server: there an open watch that is
        caught up survives etcd's compaction, and only a watch that reconnects from a compacted
        resourceVersion gets 410 (tests/e2e/test_disruption.py shows that on kube-apiserver).
        The 410 on an open stream is what a client sees when it fell too far behind."""
        with self.store.lock:
            return self.store.hub.expire_all(self.store.rv)

    def watch_count(self) -> int:
        with self.store.lock:
            return self.store.hub.count()

    def wait_for_watches(self, n: int = 1, timeout: float = 5.0) -> None:
        """Block until at least ``n`` watches are open (a watch is open before it yields)."""
        deadline = time.monotonic() + timeout
        while self.watch_count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.watch_count()} watches open, wanted {n}")
            time.sleep(0.005)

    # ---- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self.log.snapshot()

    def count(self, verb: str | None = None, resource: str | None = None,
              namespace: str | None = None, name: str | None = None,
              status: int | None = None) -> int:
        return self.log.count(verb=verb, resource=resource, namespace=namespace, name=name,
                              status=status)

    def reset_log(self) -> None:
        self.log.reset()
