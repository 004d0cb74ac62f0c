"""Building the ApiClient: where the configuration comes from, and what regcred changes in it.

The ``kubernetes`` package's loaders fill a ``Configuration`` (server, CA, credentials) from a
kubeconfig or from the Pod's service account. regcred turns urllib3's own Retry-After sleeps
off (``KubeClient`` retries every verb on the event loop instead) and runs the loaders'
credential refresh at most once a second (``ThrottledConfiguration``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes
import urllib3
from kubernetes.client import ApiClient, Configuration

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# urllib3 would itself retry a GET answered 429/503 with Retry-After, asleep in a worker thread
# (and never a write): switch that off, KubeClient retries every verb on the event loop instead.
# Connection errors keep urllib3's default of 3 retries.
TRANSPORT_RETRIES = urllib3.util.Retry(3, respect_retry_after_header=False)
# The loaders' refresh hook runs before every request and re-applies the whole configuration;
# setting the host alone re-reads proxy settings from every environment variable (and a Pod has
# several per Service in its namespace): ~0.2 ms of the ~1.5 ms of CPU a Secret create took on
# the benchmark machine. A credential plugin whose token expires within the kubeconfig loader's
# 5-minute margin ran again before every request. The loaders re-read the in-cluster token once
# a minute and renew kubeconfig credentials 5 minutes before they expire, so running the hook
# at most once a second loses nothing.
AUTH_REFRESH_SECONDS = 1.0


def load_api_client(kubeconfig: str | os.PathLike[str] | None = None, *, pool_size: int = 16) -> ApiClient:
    """An ApiClient from ``kubeconfig``, else in-cluster config, else KUBECONFIG / ~/.kube/config.

    The order is controller-runtime's: an explicit file wins, then KUBECONFIG, then the Pod's
    service account; a developer laptop falls through to ~/.kube/config.
    """
    configuration = ThrottledConfiguration()
    in_cluster = os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG")
    if kubeconfig is None and in_cluster:
        # try_refresh_token (the default) re-reads the projected token file: bound
        # service-account tokens expire after an hour and the kubelet rotates them.
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        # Read KUBECONFIG now: the client's own default was frozen when it was imported.
        path = os.fspath(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG", "~/.kube/config")
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    # urllib3 keeps only this many idle connections per host; match the worker threads.
    configuration.connection_pool_maxsize = pool_size
    configuration.retries = TRANSPORT_RETRIES
    return ApiClient(configuration)


class AtMostEvery:
    """Calls ``hook(*args)``, skipping calls less than ``seconds`` after the last one that ran.
    Threads may race past the check together: the hook then runs twice, which is harmless."""

    def __init__(self, hook: Callable[..., object], seconds: float, *,
                 clock: Callable[[], float] = time.monotonic):
        self.hook = hook
        self._seconds = seconds
        self._clock = clock
        self._due = float("-inf")

    def __call__(self, *args: object) -> None:
        now = self._clock()
        if now < self._due:
            return
        self._due = now + self._seconds
        self.hook(*args)


class ThrottledConfiguration(Configuration):
    """A Configuration whose ``refresh_api_key_hook``, whoever sets it, runs at most once every
    AUTH_REFRESH_SECONDS.

    A setter rather than a wrapper put around the hook once: each time the loaders' hook runs
    it installs a fresh hook of its own, and a worker thread reading the attribute between that
    and a re-wrap would install the next one unwrapped for good.
    """

    # Configuration declares the hook by assigning None in __init__, so mypy types it as None.
    @property  # type: ignore[override]
    def refresh_api_key_hook(self) -> AtMostEvery | None:
        return self.__dict__.get("_refresh_hook")

    @refresh_api_key_hook.setter
    def refresh_api_key_hook(self, hook: Callable[[Configuration], object] | None) -> None:
        current = self.__dict__.get("_refresh_hook")
        if hook is None or isinstance(hook, AtMostEvery):
            self.__dict__["_refresh_hook"] = hook
        elif current is None:
            self.__dict__["_refresh_hook"] = AtMostEvery(hook, AUTH_REFRESH_SECONDS)
        else:
            current.hook = hook  # the loader's next hook, on the same schedule


def own_namespace(explicit: str | None = None) -> str | None:
    """regcred's namespace: ``--namespace``, else POD_NAMESPACE, else the service account's."""
    if explicit:
        return explicit
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
