"""Every Prometheus metric regcred exposes, on its own CollectorRegistry.

Nothing is registered at import: ``Metrics()`` builds a fresh registry, so tests and several
app instances in one process never collide. Units are seconds; labels are bounded (registry
id, outcome, operation, result), never a pod, namespace or image name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Admission must answer within the API server's timeoutSeconds (5 s in the chart); the
# buckets resolve the sub-millisecond warm path as well as slow cold writes.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.admission_requests = Counter(
            "regcred_admission_requests",
            "AdmissionReviews answered, by result: patched, unchanged, skipped, invalid (HTTP 4xx).",
            ["result"], registry=r,
        )
        self.admission_duration = Histogram(
            "regcred_admission_duration_seconds",
            "Time to answer one AdmissionReview, from body received to response built.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.admission_warnings = Counter(
            "regcred_admission_warnings",
            "Warnings attached to admitted Pods, by reason.",
            ["reason"], registry=r,
        )
        self.pull_secret_writes = Counter(
            "regcred_pull_secret_writes",
            "Pull Secret ensure operations, by registry and outcome "
            "(created, updated, unchanged, dry_run, conflict, failed).",
            ["registry", "outcome"], registry=r,
        )
        self.pull_secret_conflicts = Counter(
            "regcred_pull_secret_conflicts",
            "Secrets with regcred's name that regcred does not manage (left untouched).",
            ["registry"], registry=r,
        )
        self.registry_unavailable = Counter(
            "regcred_registry_unavailable",
            "Admissions that matched a registry whose credentials could not be had.",
            ["registry"], registry=r,
        )
        self.admission_denied_registry = Counter(
            "regcred_admission_denied_registry",
            "Matched registries withheld from a Pod because its namespace is not granted them.",
            ["registry"], registry=r,
        )
        self.config_registries = Gauge(
            "regcred_config_registries", "Registries in the active registry list.", registry=r,
        )
        self.config_valid = Gauge(
            "regcred_config_valid",
            "1 when the last registry list read was valid, 0 when the last good one is kept.",
            registry=r,
        )
        self.config_reloads = Counter(
            "regcred_config_reloads", "Registry list loads, by outcome (applied, rejected).",
            ["outcome"], registry=r,
        )
        self.refresh_runs = Counter(
            "regcred_refresh_runs",
            "Refresher passes over the managed Secrets, by outcome (ok, errors, skipped: not leader "
            "or no valid registry list).",
            ["outcome"], registry=r,
        )
        self.refresh_duration = Histogram(
            "regcred_refresh_duration_seconds", "Time one refresher pass took, writes included.",
            # A pass rewriting thousands of Secrets is paced by the client rate limit: minutes.
            buckets=(0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0), registry=r,
        )
        self.refresh_secret_writes = Counter(
            "regcred_refresh_secret_writes",
            "Managed Secrets the refresher wrote, by registry and operation "
            "(created, updated, deleted, conflict, failed).",
            ["registry", "operation"], registry=r,
        )
        self.refresh_last_success = Gauge(
            "regcred_refresh_last_success_timestamp_seconds",
            "Unix time the last refresher pass finished without errors.", registry=r,
        )
        self.leader = Gauge(
            "regcred_leader", "1 while this instance holds the leader Lease (runs the refresher).",
            registry=r,
        )
        self.token_mints = Counter(
            "regcred_token_mints", "Credential mints, by registry and outcome (success, failure, expired).",
            ["registry", "outcome"], registry=r,
        )
        self.token_mint_duration = Histogram(
            "regcred_token_mint_duration_seconds", "Time one provider call took to mint a credential.",
            ["provider"], buckets=_MINT_BUCKETS, registry=r,
        )
        self.token_expiry = Gauge(
            "regcred_token_expiry_timestamp_seconds",
            "Unix time at which the current credential of a registry expires (absent: no expiry).",
            ["registry"], registry=r,
        )
        self.ci_requests = Counter(
            "regcred_ci_requests",
            "CI credential requests, by registry (\"unknown\" when not in the list) and outcome "
            "(ok, unauthenticated, rate_limited, forbidden_role, forbidden_scope, not_found, "
            "not_exposed, not_ready, unavailable, no_route, error).",
            ["registry", "outcome"], registry=r,
        )

        # What ``GET /status`` reports is read back from these series (webhook/status.py), so the
        # status endpoint can never say more than /metrics does.
        self.config_generation = Gauge(
            "regcred_config_generation", "Registry lists applied since start (1 after the first).", registry=r,
        )
        self.registry_info = Gauge(
            "regcred_registry_info", "1 for each registry in the active list, with its type.",
            ["registry", "type"], registry=r,
        )
        self.caches_synced = Gauge(
            "regcred_caches_synced", "1 once the watch-fed caches have synced (always 1 without a cluster).",
            registry=r,
        )
        self.token_available = Gauge(
            "regcred_token_available", "1 when a credential for the registry can be handed out now.",
            ["registry"], registry=r,
        )
        self.token_last_success = Gauge(
            "regcred_token_last_success_timestamp_seconds", "Unix time of the registry's last successful mint.",
            ["registry"], registry=r,
        )
        self.token_last_failure = Gauge(
            "regcred_token_last_failure_timestamp_seconds",
            "Unix time of the registry's last failed mint, labelled with the error's class only "
            "(CredentialUnavailable, or the provider's exception type): never its text.",
            ["registry", "error_class"], registry=r,
        )
        self.managed_secrets = Gauge(
            "regcred_managed_secrets", "Pull Secrets regcred manages, by registry.", ["registry"], registry=r,
        )
        self.managed_secrets_stale = Gauge(
            "regcred_managed_secrets_stale",
            "Managed pull Secrets past their regcred.io/expires-at, by registry.", ["registry"], registry=r,
        )

    def forget_registry(self, registry_id: str) -> None:
        """Drop per-registry series of a registry that left the list."""
        try:
            self.token_expiry.remove(registry_id)
        except KeyError:
            pass
