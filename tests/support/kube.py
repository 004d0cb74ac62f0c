"""Helpers for tests that drive regcred's Kubernetes code against the fake API server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx

from webhook import cluster
from webhook.app import create_app
from webhook.kube.client import KubeClient, TokenBucket
from webhook.kube.config import TRANSPORT_RETRIES
from webhook.kube.leader import LeaseTimings
from webhook.providers import Credential, CredentialUnavailable
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
        expires = datetime.fromtimestamp(self.clock() + self.life, timezone.utc)
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
                 **settings):
        options = {"namespace": OWN, "registries_configmap": CONFIGMAP, "refresh_interval_seconds": 0.5, **settings}
        self.settings = Settings(**options)
        self.cluster = cluster.build(self.settings, kube_client(server), providers=providers, clock=clock,
                                     identity=identity, lease=lease)
        self.deps = self.cluster.deps
        self.http: httpx.AsyncClient | None = None

    async def start(self) -> Instance:
        await cluster.start(self.cluster)
        self.deps.readiness.set("certificate loaded", True)  # no TLS in process
        app = create_app(self.settings, self.deps)
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
        await self.cluster.stop()

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
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


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

    def take_now(self) -> bool:
        taken = super().take_now()
        self.taken += taken
        return taken
