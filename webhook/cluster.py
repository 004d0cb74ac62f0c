"""Cluster mode: build the Kubernetes-backed dependencies and run their background work.

Everything that talks to the API server is started here, inside the running event loop:
the watch-fed caches (managed Secrets, credentials Secrets, namespaces, the registry list
ConfigMap), leader election and the refresher. ``start`` returns a handle whose ``stop``
shuts them down in order: the Lease is released before the caches stop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.activeregistries import ActiveRegistries
from webhook.app import Dependencies, Readiness
from webhook.certauthority import Policy
from webhook.certs import TlsFiles
from webhook.ci.tokens import TokenList
from webhook.credentialcache import CredentialCache
from webhook.kube.client import KubeClient
from webhook.kube.configmap import ConfigMapWatch, RegistryListApplier
from webhook.kube.connection import own_namespace
from webhook.kube.coverage import Coverage
from webhook.kube.credentialsecrets import CredentialSecrets, credentials_informer
from webhook.kube.events import EventRecorder, ObjectRef
from webhook.kube.informer import RELIST_BACKOFF
from webhook.kube.leader import LeaderElector, LeaseTimings, default_identity
from webhook.kube.named import NamedInformers
from webhook.kube.namespaces import NamespaceCache
from webhook.kube.permissions import PermissionReporter
from webhook.kube.secretstore import KubeSecretStore, pull_secret_informer
from webhook.kube.webhookcert import WebhookCertController
from webhook.metrics import Metrics
from webhook.providers import Provider
from webhook.providers.builtin import builtin_providers
from webhook.refresher import Refresher
from webhook.secretwriter import SecretWriter
from webhook.settings import Settings

log = logging.getLogger(__name__)

CI_TOKENS_KEY = "tokens.yaml"
DEFAULT_LEASE = LeaseTimings()


@dataclass
class Cluster:
    client: KubeClient
    deps: Dependencies
    secrets: KubeSecretStore
    material: CredentialSecrets
    namespaces: NamespaceCache
    refresher: Refresher
    elector: LeaderElector | None
    configmap: ConfigMapWatch | None
    applier: RegistryListApplier | None
    webhookcert: WebhookCertController | None = None
    on_synced: list[Callable[[], None]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def aclose(self) -> None:
        """Stop everything built here, in order, then close the client: the Lease is released
        (the elector's task), pending mints and Secret writes are cancelled, the watches end.
        The app's own work (admissions, repairs) stops in its lifespan, before this runs."""
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.applier is not None:
            await self.applier.drain()
        await self.deps.tokens.aclose()
        await self.deps.store.stop()  # pending Secret writes, then the watches
        for cache in (self.configmap, self.material, self.namespaces):
            if cache is not None:
                await cache.stop()
        self.client.close()


def build(settings: Settings, client: KubeClient | None = None, *, providers: Mapping[str, Provider] | None = None,
          clock: Callable[[], float] | None = None, identity: str | None = None,
          lease: LeaseTimings = DEFAULT_LEASE, lease_clock: Callable[[], float] | None = None,
          relist_backoff: tuple[float, float] = RELIST_BACKOFF) -> Cluster:
    """Wire cluster mode. The keyword arguments exist for tests that run several instances, or
    fake credential sources and time, against one fake API server; ``serve`` passes none.
    ``clock`` is wall time (credential and Secret expiry); ``lease_clock`` the elector's;
    ``relist_backoff`` every watch's retry delays after a failed list or watch."""
    client = client or KubeClient.connect(
        settings.kubeconfig, qps=settings.kube_qps, burst=settings.kube_burst, request_timeout=5)
    namespace = own_namespace(settings.namespace)
    if namespace is None:
        raise ValueError("regcred's namespace is unknown: give --namespace or set POD_NAMESPACE")
    metrics = Metrics()
    client.on_forbidden = PermissionReporter(lambda verb, resource: metrics.kube_forbidden.labels(verb, resource).inc())
    identity = identity or default_identity()
    recorder = EventRecorder(client, instance=identity)
    # Built below; the callbacks that use them run only once everything is started.
    coverage: Coverage
    refresher: Refresher
    webhookcert: WebhookCertController | None
    # One watch per Secret name: what RBAC resourceNames can grant (webhook/kube/named.py).
    report = lambda name, missing: coverage.forbidden(name, missing)  # noqa: E731
    pull = NamedInformers(lambda name, **options: pull_secret_informer(client, name, backoff=relist_backoff, **options),
                          on_forbidden=report)
    credentials = NamedInformers(lambda name, **options: credentials_informer(client, namespace, name,
                                                                               backoff=relist_backoff, **options),
                                 on_forbidden=report)
    material = CredentialSecrets(client, namespace, credentials)
    clocked: dict[str, Any] = {"clock": clock} if clock else {}
    tokens = CredentialCache(builtin_providers() if providers is None else providers, material, metrics,
                             refresh_fraction=settings.refresh_fraction, **clocked)
    secrets = KubeSecretStore(client, pull)
    # One clock for freshness and tokens.
    store = SecretWriter(secrets, wall_clock=clock or time.time)
    config = ActiveRegistries(metrics)
    configmap_ref = (ObjectRef("ConfigMap", namespace, settings.registries_configmap)
                     if settings.registries_configmap else None)
    coverage = Coverage(pull, credentials, recorder=recorder, configmap=configmap_ref,
                        extra_credentials=[settings.ci_tokens_secret] if settings.ci_tokens_secret else [])
    config.subscribe(coverage.applied)
    namespaces = NamespaceCache(client, backoff=relist_backoff)
    readiness = Readiness({"registry list valid": False, "certificate loaded": False, "caches synced": False})
    deps = Dependencies(metrics, config, store, tokens, readiness, namespaces, TokenList())
    elector = None
    lease_clocked: dict[str, Any] = {"clock": lease_clock} if lease_clock else {}
    if settings.leader_elect:
        # Threads of its own: a renewal must never wait for a worker behind slow Secret writes.
        elector = LeaderElector(client.with_limit(qps=5, burst=10, workers=2), namespace=namespace, identity=identity,
                                metrics=metrics,
                                on_change=lambda leading: _woken(refresher, webhookcert) if leading else None,
                                timings=lease, **lease_clocked)
    refresher = Refresher(registries=lambda: config.registries, tokens=tokens, store=store, metrics=metrics,
                          is_leader=(lambda: elector.is_leader) if elector else (lambda: True),
                          prune=settings.prune, interval=settings.refresh_interval_seconds,
                          namespace_labels=namespaces.known_labels)
    material.subscribe(refresher.material_changed)
    namespaces.on_labels_changed(refresher.wake)  # a namespace may have stopped qualifying
    configmap = applier = None
    if settings.registries_configmap:
        applier = RegistryListApplier(config, recorder,
                                      source=f"{namespace}/{settings.registries_configmap}", on_applied=refresher.wake)
        configmap = ConfigMapWatch(client, namespace, settings.registries_configmap, applier, backoff=relist_backoff)
    webhookcert = _webhook_cert(settings, client, namespace, readiness,
                                (lambda: elector.is_leader) if elector else (lambda: True))
    on_synced = []
    if settings.ci_tokens_secret:
        on_synced.append(_watch_ci_tokens(material, deps.ci_tokens, settings.ci_tokens_secret, f"secret {namespace}/"))
    return Cluster(client, deps, secrets, material, namespaces, refresher, elector, configmap, applier, webhookcert,
                   on_synced)


def _woken(*controllers: Refresher | WebhookCertController | None) -> None:
    for controller in controllers:
        if controller is not None:
            controller.wake()


def _webhook_cert(settings: Settings, client: KubeClient, namespace: str, readiness: Readiness,
                  is_leader: Callable[[], bool]) -> WebhookCertController | None:
    """tls.mode managed: regcred's own CA and serving certificate (webhook/kube/webhookcert.py)."""
    if not settings.webhook_cert_secret or settings.tls_cert is None or settings.tls_key is None:
        return None
    validity = settings.webhook_cert_validity_seconds
    interval = min(max(validity / 30, 0.5), 60.0)  # a year: every minute; a test's seconds: twice a second
    policy = Policy(settings.webhook_cert_sans, dt.timedelta(seconds=validity),
                    dt.timedelta(seconds=settings.webhook_ca_validity_seconds),
                    ca_name=f"regcred webhook CA {namespace}")
    return WebhookCertController(client, namespace=namespace, secret=settings.webhook_cert_secret,
                                 webhook=settings.webhook_configuration, policy=policy,
                                 files=TlsFiles(settings.tls_cert, settings.tls_key), readiness=readiness,
                                 is_leader=is_leader, interval=interval, settle=max(2 * interval, 2.0))


def _watch_ci_tokens(material: CredentialSecrets, tokens: TokenList, name: str, source: str) -> Callable[[], None]:
    """Keep ``tokens`` in step with the Secret ``name``; returns the first apply, run once synced."""
    def apply(changed: str | None = None) -> None:
        if changed is not None and changed != name:
            return
        data = material.read(name)
        if data is None or CI_TOKENS_KEY not in data:
            tokens.apply_text("", source + name)  # Secret or key gone: fail closed, no token accepted
            return
        tokens.apply_text(data[CI_TOKENS_KEY].decode("utf-8", "replace"), source + name)

    material.subscribe(apply)
    return apply


async def start(cluster: Cluster) -> None:
    """Start the caches, then leader election and the refresher; readiness follows the sync."""
    caches = [cluster.material, cluster.secrets, cluster.namespaces]
    if cluster.configmap is not None:
        caches.append(cluster.configmap)
    for cache in caches:
        cache.start()

    async def synced() -> None:
        await asyncio.gather(*(cache.synced.wait() for cache in caches))
        for callback in cluster.on_synced:
            callback()
        cluster.deps.readiness.set("caches synced", True)
        log.info("caches synced", extra={"managed_secrets": len(cluster.secrets.managed())})

    cluster.tasks.append(asyncio.create_task(synced()))
    if cluster.elector is not None:
        cluster.tasks.append(asyncio.create_task(cluster.elector.run(cluster.stop_event)))
    cluster.tasks.append(asyncio.create_task(cluster.refresher.run(cluster.stop_event)))
    if cluster.webhookcert is not None:
        cluster.tasks.append(asyncio.create_task(cluster.webhookcert.run(cluster.stop_event)))
