"""The composition root: what ``regcred serve`` runs, built in one place and closed by one owner.

``compose(settings)`` builds local mode (the in-memory store as the sole writer, credentials
from ``--secrets-dir``) or cluster mode (``cluster.build``: the watches, the Kubernetes store,
leader election, the refresher, the managed certificate). ``Process.aclose()`` stops all of
it in order, each step bounded, so an API server that does not answer cannot eat the
shutdown grace period. Routes are ``app.create_app``'s; listeners, signals and the process's
garbage-collector settings are ``server.serve``'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from webhook import cluster as cluster_mode
from webhook.activeregistries import ActiveRegistries
from webhook.app import Dependencies, Readiness
from webhook.cluster import Cluster
from webhook.credentialcache import CredentialCache
from webhook.kube.webhookcert import WebhookCertController
from webhook.metrics import Metrics
from webhook.providers import MaterialSource
from webhook.providers.builtin import builtin_providers
from webhook.pullsecrets import InMemorySecretStore
from webhook.secretsdir import SecretsDir
from webhook.secretwriter import SecretWriter
from webhook.settings import Settings

log = logging.getLogger(__name__)

# Each shutdown step's bound: the requests' GRACEFUL_SECONDS (listeners.py) plus this stay within
# the Pod's 30 s grace period.
STOP_SECONDS = 5.0


@dataclass
class Process:
    deps: Dependencies
    cluster: Cluster | None = None

    @property
    def webhookcert(self) -> WebhookCertController | None:
        """The managed serving certificate (tls.mode managed), if regcred manages one."""
        return self.cluster.webhookcert if self.cluster is not None else None

    async def start(self) -> None:
        if self.cluster is not None:
            await cluster_mode.start(self.cluster)

    def stopping(self) -> None:
        """SIGTERM arrived: give up leadership while requests drain, not after (failover sooner)."""
        if self.cluster is not None:
            self.cluster.stop_event.set()

    async def aclose(self) -> None:
        """Stop everything built here; the app's own work (admissions, repairs) stopped in its lifespan."""
        if self.cluster is not None:
            await _bounded(self.cluster.aclose(), "cluster")
        else:
            await _bounded(self.deps.tokens.aclose(), "credential cache")
            await _bounded(self.deps.store.stop(), "secret store")


def default_dependencies(settings: Settings, material: MaterialSource | None = None) -> Dependencies:
    """Local mode: one process is the only writer of its in-memory Secrets."""
    metrics = Metrics()
    source = material if material is not None else SecretsDir(settings.secrets_dir)
    tokens = CredentialCache(builtin_providers(), source, metrics, refresh_fraction=settings.refresh_fraction)
    readiness = Readiness({"registry list valid": False, "certificate loaded": False})
    store = SecretWriter(InMemorySecretStore(), sole_writer=True)
    return Dependencies(metrics, ActiveRegistries(metrics), store, tokens, readiness)


def compose(settings: Settings) -> Process:
    """Build the process ``settings`` ask for. Raises when the cluster cannot be used
    (an unreadable kubeconfig, an unknown namespace)."""
    if settings.uses_cluster:
        built = cluster_mode.build(settings)
        return Process(built.deps, built)
    return Process(default_dependencies(settings))


async def _bounded(work: Awaitable[None], what: str) -> None:
    try:
        await asyncio.wait_for(work, STOP_SECONDS)
    except TimeoutError:
        log.warning("shutdown step timed out", extra={"step": what, "seconds": STOP_SECONDS})
