"""Helpers for tests that drive regcred's Kubernetes code against the fake API server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from webhook import cluster
from webhook.activeregistries import ActiveRegistries
from webhook.app import create_app
from webhook.credentialcache import CredentialCache
from webhook.kube.client import KubeClient, TokenBucket
from webhook.kube.connection import TRANSPORT_RETRIES
from webhook.kube.credentialsecrets import CredentialSecrets
from webhook.kube.informer import RELIST_BACKOFF
from webhook.kube.leader import LeaseTimings
from webhook.kube.namespaces import NamespaceCache
from webhook.kube.secretstore import KubeSecretStore
from webhook.metrics import Metrics
from webhook.providers import Credential, CredentialUnavailable
from webhook.providers.basic import BasicProvider
from webhook.provisioner import REPAIR_DELAYS, Provisioner
from webhook.refresher import Refresher
from webhook.secretwriter import SecretWriter
from webhook.settings import Settings

# Short enough that an injected hang fails fast, long enough for a loaded CI machine.
REQUEST_TIMEOUT = 1.0


def kube_client(server, **options) -> KubeClient:
    """A KubeClient on the fake; unlimited rate unless the test asks for one."""
    options.setdefault("qps", 0)
    options.setdefault("request_timeout", REQUEST_TIMEOUT)
    # The transport retries regcred configures (load_api_client): Retry-After is KubeClient's job.
    return KubeClient(server.api_client(retries=TRANSPORT_RETRIES), **options)


async def eventually(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` on the event loop until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def credentials_secret(name: str, username: str, password: str) -> dict:
    return {"metadata": {"name": name}, "data": {"username": b64(username), "password": b64(password)}}


def auths(secret: dict) -> dict:
    """The decoded ``auths`` of a dockerconfigjson Secret."""
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]


# ---- a whole cluster-mode regcred in this process -----------------------------------------

OWN = "regcred-system"
CONFIGMAP = "regcred-registries"
PRIVATE = "registry.example.com/team"
REGISTRIES_YAML = f"registries:\n  - {{id: private, url: {PRIVATE}, type: basic, secretRef: private-creds}}\n"
SECRET_NAME = "regcred-private"
# A short lease so failover shows within seconds; the order client-go requires still holds.
SHORT_LEASE = LeaseTimings(lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)


class ExpiringProvider:
    """The registry's username and password from its credentials Secret, as a token living
    ``life`` seconds of ``clock``: ``<password>.<n>`` for the n-th mint, like an ECR token."""

    def __init__(self, clock: Callable[[], float], life: float = 120.0, tag: str = ""):
        self.clock, self.life, self.tag = clock, life, tag
        self.mints = 0

    def mint(self, registry, material):
        if not material:
            raise CredentialUnavailable(f"{registry.id}: credentials Secret missing")
        self.mints += 1
        expires = datetime.fromtimestamp(self.clock() + self.life, UTC)
        password = f"{material['password'].decode()}.{self.tag}{self.mints}"
        return Credential(material["username"].decode(), password, expires)


def seed_cluster(server, namespaces, password: str = "pass-1") -> None:
    """regcred's namespace, its registry list ConfigMap and credentials Secret, team namespaces."""
    for namespace in (OWN, *namespaces):
        server.add_namespace(namespace)
    server.put_object("configmaps", {"metadata": {"name": CONFIGMAP, "namespace": OWN},
                                     "data": {"registries.yaml": REGISTRIES_YAML}})
    set_password(server, password)


def set_password(server, password: str) -> None:
    server.put_object("secrets", {**credentials_secret("private-creds", "puller", password)}, OWN)


def pod_review(namespace: str, image: str = f"{PRIVATE}/app:1", uid: str = "u") -> dict:
    """The AdmissionReview (v1) of a one-container Pod's CREATE, as the API server sends it."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "namespace": namespace, "object": {"metadata": {"name": "app", "namespace": namespace},
                                           "spec": {"containers": [{"name": "c", "image": image}]}}}}


class Instance:
    """One regcred in cluster mode, wired by ``cluster.build`` and started by ``cluster.start``
    exactly as ``regcred serve`` does; its admission app is called through httpx's ASGI
    transport (the same Starlette app uvicorn serves, without TLS)."""

    def __init__(self, server, *, identity: str, providers=None, clock=None, lease: LeaseTimings = SHORT_LEASE,
                 lease_clock=None, relist_backoff: tuple[float, float] = RELIST_BACKOFF,
                 repair_delays: tuple[float, ...] = REPAIR_DELAYS, **settings):
        options = {"namespace": OWN, "registries_configmap": CONFIGMAP, "refresh_interval_seconds": 0.5, **settings}
        self.settings = Settings(**options)
        self.cluster = cluster.build(self.settings, kube_client(server), providers=providers, clock=clock,
                                     identity=identity, lease=lease, lease_clock=lease_clock,
                                     relist_backoff=relist_backoff)
        self.lease_clock = lease_clock
        self.repair_delays = repair_delays
        self.deps = self.cluster.deps
        self.http: httpx.AsyncClient | None = None
        self._lifespan = contextlib.AsyncExitStack()

    async def start(self) -> Instance:
        await cluster.start(self.cluster)
        self.deps.readiness.set("certificate loaded", True)  # no TLS in process
        app = create_app(self.settings, self.deps, repair_delays=self.repair_delays)
        await self._lifespan.enter_async_context(app.router.lifespan_context(app))  # as uvicorn runs it
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://regcred", timeout=30)
        await eventually(self.ready, timeout=20, what="readiness")
        return self

    def ready(self) -> bool:
        """What /readyz answers (it sets the registry-list condition when asked)."""
        return self.deps.config.ready and not set(self.deps.readiness.failing()) - {"registry list valid"}

    @property
    def leading(self) -> bool:
        return self.cluster.elector is not None and self.cluster.elector.is_leader

    async def admit(self, namespace: str) -> tuple[int, dict]:
        """(HTTP status, AdmissionReview response) for one Pod CREATE in ``namespace``."""
        answer = await self.http.post("/mutate", json=pod_review(namespace))
        return answer.status_code, (answer.json().get("response") or {}) if answer.status_code == 200 else {}

    async def stop(self) -> None:
        """A clean stop, as on SIGTERM: the Lease is released."""
        if self.http is not None:
            await self.http.aclose()
        await self._lifespan.aclose()  # uvicorn ends the app's lifespan, then serve() stops the cluster
        await self.cluster.aclose()

    async def crash(self) -> None:
        """Stop everything without releasing the Lease, as a killed Pod would."""
        for task in self.cluster.tasks:
            task.cancel()
        await asyncio.gather(*self.cluster.tasks, return_exceptions=True)
        self.cluster.tasks.clear()
        await self.stop()


def password_of(secret: dict) -> str:
    return next(iter(auths(secret).values()))["password"]


def expires_at(secret: dict) -> float:
    value = secret["metadata"]["annotations"]["regcred.io/expires-at"]
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def managed_secrets(server) -> list[dict]:
    return [s for s in server.objects("secrets")
            if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "regcred"]


class CountingBucket(TokenBucket):
    """The client's limiter, counting the tokens taken from it."""

    def __init__(self) -> None:
        super().__init__(qps=0, burst=1)
        self.taken = 0

    async def acquire(self) -> float:
        self.taken += 1
        return await super().acquire()


class Replica:
    """One regcred's refresher side on the fake API server, wired as cluster mode wires it: a
    KubeClient (its limiter counting tokens), the credentials watch feeding the token cache,
    the managed-Secret watch feeding the store, a Provisioner standing in for admissions and a
    Refresher. ``namespaces``: with the namespace watch feeding the refresher's tenancy checks.
    Passes are driven with ``refresher.run_once`` unless a test starts the loop itself."""

    def __init__(self, server, registries: str, *, own: str = OWN, is_leader=lambda: True, providers=None,
                 clock=None, namespaces: bool = False, **options):
        self.limiter = CountingBucket()
        self.client = kube_client(server, limiter=self.limiter)
        self.metrics = Metrics()
        self.config = ActiveRegistries(self.metrics)
        assert self.config.apply_text(registries, "test"), self.config.errors
        self.material = CredentialSecrets(self.client, own)
        extra = {"clock": clock} if clock else {}
        self.tokens = CredentialCache(providers or {"basic": BasicProvider()}, self.material, self.metrics, **extra)
        self.secrets = KubeSecretStore(self.client)
        self.store = SecretWriter(self.secrets)
        self.namespaces = NamespaceCache(self.client) if namespaces else None
        if self.namespaces is not None:
            options["namespace_labels"] = self.namespaces.known_labels
        self.provisioner = Provisioner(self.tokens, self.store, self.metrics)
        self.refresher = Refresher(registries=lambda: self.config.registries, tokens=self.tokens, store=self.store,
                                   metrics=self.metrics, is_leader=is_leader, **options)
        self.material.subscribe(self.refresher.material_changed)
        if self.namespaces is not None:
            self.namespaces.on_labels_changed(self.refresher.wake)

    async def start(self, *, watch_namespaces: bool = True) -> Replica:
        """Start the watches and wait for them to sync (the namespace one only if asked)."""
        caches = [self.material, self.secrets]
        if self.namespaces is not None and watch_namespaces:
            caches.append(self.namespaces)
        for cache in caches:
            cache.start()
        await asyncio.wait_for(asyncio.gather(*(cache.synced.wait() for cache in caches)), 5)
        return self

    async def admit(self, *namespaces: str, registry: str | None = None) -> None:
        """What an admission of a Pod on ``registry`` (the first listed by default) does in each
        namespace; no warning allowed."""
        for namespace in namespaces:
            [provisioned] = await self.provisioner.provision(namespace, [self._registry(registry)], dry_run=False)
            assert provisioned.warning is None, provisioned.warning

    async def stop(self) -> None:
        for cache in (self.store, self.material, self.namespaces):
            if cache is not None:
                await cache.stop()
        self.client.close()

    def writes(self, operation: str, registry: str | None = None) -> float:
        labels = {"registry": self._registry(registry).id, "operation": operation}
        return self.metrics.registry.get_sample_value("regcred_refresh_secret_writes_total", labels) or 0.0

    def _registry(self, registry_id: str | None):
        registries = self.config.registries
        return registries.registries[0] if registry_id is None else registries.by_id(registry_id)

    def runs(self, outcome: str) -> float:
        return self.metrics.registry.get_sample_value("regcred_refresh_runs_total", {"outcome": outcome}) or 0.0
