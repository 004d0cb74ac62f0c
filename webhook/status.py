"""``GET /status`` on the metrics port: what ``regcred check`` reads, as JSON.

The document is built from the metric samples only (``document``), after ``observe`` has set
the few gauges that are computed on demand (credentials available now, managed and stale
Secrets per registry, caches synced). So /status can never expose more than /metrics: no
Secret names beyond ``regcred-<id>``, no namespace, no error text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from webhook.credentialcache import CredentialCache
from webhook.jsontypes import JsonObject
from webhook.metrics import Metrics
from webhook.pullsecrets import REGISTRY_LABEL, expires_at
from webhook.registries import RegistryList
from webhook.secretwriter import SecretWriter


def observe(metrics: Metrics, registries: RegistryList | None, tokens: CredentialCache, store: SecretWriter,
            caches_synced: bool, now: float) -> None:
    """Set the gauges computed on demand, right before a scrape or a status read."""
    metrics.caches_synced.set(1 if caches_synced else 0)
    metrics.token_available.clear()
    for registry in registries.registries if registries else []:
        metrics.token_available.labels(registry.id).set(1 if tokens.peek(registry) is not None else 0)
    total, stale = count_managed(store.managed(), now)
    metrics.managed_secrets.clear()
    metrics.managed_secrets_stale.clear()
    for registry_id in total:
        metrics.managed_secrets.labels(registry_id).set(total[registry_id])
        metrics.managed_secrets_stale.labels(registry_id).set(stale[registry_id])


def count_managed(secrets: Iterable[JsonObject], now: float) -> tuple[Counter[str], Counter[str]]:
    """Managed Secrets per registry id, and those past their expires-at annotation."""
    total: Counter[str] = Counter()
    stale: Counter[str] = Counter()
    for secret in secrets:
        registry_id = ((secret.get("metadata") or {}).get("labels") or {}).get(REGISTRY_LABEL, "unknown")
        total[registry_id] += 1
        expiry = expires_at(secret)
        if expiry is not None and expiry <= now:
            stale[registry_id] += 1
    return total, stale


def document(registry: CollectorRegistry) -> dict[str, Any]:
    """The status document, read back from the samples /metrics would serve."""
    single: dict[str, float] = {}
    per: dict[str, dict[str, Any]] = {}

    def entry(registry_id: str) -> dict[str, Any]:
        return per.setdefault(registry_id, {
            "type": None, "credentialsAvailable": None, "lastSuccess": None, "expiresAt": None,
            "lastError": None, "managedSecrets": 0, "staleSecrets": 0})

    for metric in registry.collect():
        for sample in metric.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            registry_id = labels.get("registry")
            if registry_id is None:
                single[name] = value
            elif name == "regcred_registry_info":
                entry(registry_id)["type"] = labels["type"]
            elif name in _PER_REGISTRY:
                key, convert = _PER_REGISTRY[name]
                entry(registry_id)[key] = convert(value)
            elif name == "regcred_token_last_failure_timestamp_seconds":
                entry(registry_id)["lastError"] = {"class": labels["error_class"], "time": _time(value)}
    leader = single.get("regcred_leader")
    return {
        "configValid": _flag(single.get("regcred_config_valid")),
        "configGeneration": int(single.get("regcred_config_generation", 0)),
        "cachesSynced": _flag(single.get("regcred_caches_synced")),
        "leader": None if leader is None else bool(leader),
        "registries": {key: per[key] for key in sorted(per)},
    }


def _time(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _flag(value: float | None) -> bool | None:
    return None if value is None else bool(value)


_PER_REGISTRY: dict[str, tuple[str, Callable[[float], Any]]] = {
    "regcred_token_available": ("credentialsAvailable", bool),
    "regcred_token_last_success_timestamp_seconds": ("lastSuccess", _time),
    "regcred_token_expiry_timestamp_seconds": ("expiresAt", _time),
    "regcred_managed_secrets": ("managedSecrets", int),
    "regcred_managed_secrets_stale": ("staleSecrets", int),
}
