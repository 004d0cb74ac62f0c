"""Every Prometheus metric regcred exposes, on its own CollectorRegistry, from one table.

``TABLE`` is the only description of the metrics: their help texts are built from it, and so
is the README's metrics table (``readme_table``; a test holds the README to it and the
exposition to both). Nothing is registered at import: ``Metrics()`` builds a fresh registry,
so tests and several app instances in one process never collide. Units are seconds; labels
are bounded (registry id, outcome, operation, result), never a pod, namespace or image name.
"""

from __future__ import annotations

from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Admission must answer within the API server's timeoutSeconds (5 s in the chart); the
# buckets resolve the sub-millisecond warm path as well as slow cold writes.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_MINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A pass rewriting thousands of Secrets is paced by the client rate limit: minutes.
_REFRESH_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)


@dataclass(frozen=True)
class Label:
    """A label and, when it is an enumeration, every value it takes (``values=None``: open)."""

    name: str
    values: tuple[str, ...] | None = None
    note: str = ""  # what an open label holds, for the README


@dataclass(frozen=True)
class Spec:
    attribute: str  # the attribute of ``Metrics``
    name: str  # as exposed, suffix included (``_total`` for counters)
    kind: type
    meaning: str
    labels: tuple[Label, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def help(self) -> str:
        enumerated = [f"{label.name}: {', '.join(label.values)}" for label in self.labels if label.values]
        return self.meaning + (f"; by {'; '.join(enumerated)}" if enumerated else "") + "."


_REGISTRY = Label("registry")
TABLE: tuple[Spec, ...] = (
    Spec("admission_requests", "regcred_admission_requests_total", Counter,
         "AdmissionReviews answered (invalid: HTTP 4xx; error: regcred failed and allowed the Pod unpatched; "
         "no_namespace: the API server has no such namespace, so the review was forged, and nothing was written)",
         (Label("result", ("patched", "unchanged", "skipped", "no_namespace", "invalid", "error")),)),
    Spec("admission_duration", "regcred_admission_duration_seconds", Histogram,
         "Time to answer one AdmissionReview, from body received to response built", buckets=_LATENCY_BUCKETS),
    Spec("admission_warnings", "regcred_admission_warnings_total", Counter, "Warnings attached to admitted Pods",
         (Label("reason", ("unavailable", "conflict", "write_failed", "timeout", "internal", "invalid_image")),)),
    Spec("pull_secret_writes", "regcred_pull_secret_writes_total", Counter, "Pull Secret ensure operations",
         (_REGISTRY, Label("outcome", ("created", "updated", "unchanged", "dry_run", "conflict", "failed")))),
    Spec("pull_secret_conflicts", "regcred_pull_secret_conflicts_total", Counter,
         "Secrets with regcred's name that regcred does not manage (left untouched)", (_REGISTRY,)),
    Spec("registry_unavailable", "regcred_registry_unavailable_total", Counter,
         "Admissions that matched a registry whose credentials could not be had", (_REGISTRY,)),
    Spec("admission_denied_registry", "regcred_admission_denied_registry_total", Counter,
         "Matched registries withheld from a Pod because its namespace is not granted them", (_REGISTRY,)),
    Spec("config_registries", "regcred_config_registries", Gauge, "Registries in the active registry list"),
    Spec("config_valid", "regcred_config_valid", Gauge,
         "1 when the last registry list read was valid, 0 when the last good one is kept"),
    Spec("config_reloads", "regcred_config_reloads_total", Counter, "Registry list loads",
         (Label("outcome", ("applied", "rejected")),)),
    Spec("refresh_runs", "regcred_refresh_runs_total", Counter,
         "Refresher passes over the managed Secrets (skipped: not leader or no valid registry list)",
         (Label("outcome", ("ok", "errors", "skipped")),)),
    Spec("refresh_duration", "regcred_refresh_duration_seconds", Histogram,
         "Time one refresher pass took, writes included", buckets=_REFRESH_BUCKETS),
    Spec("refresh_secret_writes", "regcred_refresh_secret_writes_total", Counter,
         "Managed Secrets the refresher wrote (deleted: registry removed; revoked: namespace no longer qualifies)",
         (_REGISTRY, Label("operation", ("created", "updated", "deleted", "revoked", "conflict", "failed")))),
    Spec("refresh_last_success", "regcred_refresh_last_success_timestamp_seconds", Gauge,
         "Unix time the last refresher pass finished without errors"),
    Spec("leader", "regcred_leader", Gauge, "1 while this instance holds the leader Lease (runs the refresher)"),
    Spec("token_mints", "regcred_token_mints_total", Counter, "Credential mints",
         (_REGISTRY, Label("outcome", ("success", "failure", "expired")))),
    Spec("token_mint_duration", "regcred_token_mint_duration_seconds", Histogram,
         "Time one provider call took to mint a credential", (Label("provider", note="the registry type"),),
         buckets=_MINT_BUCKETS),
    Spec("token_expiry", "regcred_token_expiry_timestamp_seconds", Gauge,
         "Unix time at which the current credential of a registry expires (absent: no expiry)", (_REGISTRY,)),
    Spec("tls_cert_expiry", "regcred_tls_cert_expiry_timestamp_seconds", Gauge,
         "Unix time at which the serving certificate in use expires (its notAfter)"),
    Spec("kube_forbidden", "regcred_kube_forbidden_total", Counter,
         "API calls RBAC refused: a permission regcred needs is missing (the log names it)",
         (Label("verb", note="the verb refused"), Label("resource", note="the resource, e.g. `secrets`"))),
    # What ``GET /status`` reports is read back from the next eight (webhook/status.py), so the
    # status endpoint can never say more than /metrics does.
    Spec("config_generation", "regcred_config_generation", Gauge,
         "Registry lists applied since start (1 after the first)"),
    Spec("registry_info", "regcred_registry_info", Gauge, "1 for each registry in the active list, with its type",
         (_REGISTRY, Label("type", note="the registry type"))),
    Spec("caches_synced", "regcred_caches_synced", Gauge,
         "1 once the watch-fed caches have synced (always 1 without a cluster)"),
    Spec("token_available", "regcred_token_available", Gauge,
         "1 when a credential for the registry can be handed out now",
         (_REGISTRY,)),
    Spec("token_last_success", "regcred_token_last_success_timestamp_seconds", Gauge,
         "Unix time of the registry's last successful mint", (_REGISTRY,)),
    Spec("token_last_failure", "regcred_token_last_failure_timestamp_seconds", Gauge,
         "Unix time of the registry's last failed mint, labelled with the error's class only, never its text",
         (_REGISTRY, Label("error_class", note="CredentialUnavailable, or the provider's exception type"))),
    Spec("managed_secrets", "regcred_managed_secrets", Gauge, "Pull Secrets regcred manages", (_REGISTRY,)),
    Spec("managed_secrets_stale", "regcred_managed_secrets_stale", Gauge,
         "Managed pull Secrets past their regcred.io/expires-at", (_REGISTRY,)),
    Spec("ci_requests", "regcred_ci_requests_total", Counter, "CI credential requests",
         (Label("registry", note="`unknown` when not in the list"),
          Label("outcome", ("ok", "unauthenticated", "rate_limited", "forbidden_role", "forbidden_scope", "not_found",
                            "not_exposed", "not_ready", "unavailable", "no_route", "error")))),
)


class Metrics:
    """Every metric of TABLE as an attribute (``spec.attribute``), in one registry.

    The attributes are declared for the type checker; ``__init__`` builds them from TABLE, and
    tests/test_metrics_table.py checks that the two name the same metrics of the same kinds.
    """

    admission_requests: Counter
    admission_duration: Histogram
    admission_warnings: Counter
    pull_secret_writes: Counter
    pull_secret_conflicts: Counter
    registry_unavailable: Counter
    admission_denied_registry: Counter
    config_registries: Gauge
    config_valid: Gauge
    config_reloads: Counter
    refresh_runs: Counter
    refresh_duration: Histogram
    refresh_secret_writes: Counter
    refresh_last_success: Gauge
    leader: Gauge
    token_mints: Counter
    token_mint_duration: Histogram
    token_expiry: Gauge
    tls_cert_expiry: Gauge
    kube_forbidden: Counter
    config_generation: Gauge
    registry_info: Gauge
    caches_synced: Gauge
    token_available: Gauge
    token_last_success: Gauge
    token_last_failure: Gauge
    managed_secrets: Gauge
    managed_secrets_stale: Gauge
    ci_requests: Counter

    def __init__(self) -> None:
        # The *_created series double the series count and nothing reads them. The switch is
        # process-wide in prometheus_client; every registry regcred builds wants it off.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry(auto_describe=True)
        for spec in TABLE:
            setattr(self, spec.attribute, _build(spec, self.registry))

    def forget_registry(self, registry_id: str) -> None:
        """Drop per-registry series of a registry that left the list."""
        try:
            self.token_expiry.remove(registry_id)
        except KeyError:
            pass


def _build(spec: Spec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    name = spec.name.removesuffix("_total") if spec.kind is Counter else spec.name
    options = {"buckets": spec.buckets} if spec.buckets else {}
    metric: Counter | Gauge | Histogram = spec.kind(name, spec.help, [label.name for label in spec.labels],
                                                    registry=registry, **options)
    if len(spec.labels) == 1 and spec.labels[0].values:
        # Every value exposed from the start: a rate() or an alert sees 0, not an absent series.
        for value in spec.labels[0].values:
            metric.labels(value)
    return metric


def undocumented(registry: CollectorRegistry) -> list[str]:
    """Exposed series whose name or enumerated label value ``TABLE`` does not list."""
    specs = {spec.name.removesuffix("_total") if spec.kind is Counter else spec.name: spec for spec in TABLE}
    found = []
    for family in registry.collect():
        spec = specs.get(family.name)
        if spec is None:
            found.append(family.name)
            continue
        allowed = {label.name: label.values for label in spec.labels}
        for sample in family.samples:
            for key, value in sample.labels.items():
                values = allowed.get(key)
                if key != "le" and (key not in allowed or (values and value not in values)):
                    found.append(f'{sample.name}{{{key}="{value}"}}')
    return found


def readme_table() -> str:
    """The README's metrics table, as Markdown."""
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for spec in TABLE:
        labels = ", ".join(_describe(label) for label in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.kind.__name__.lower()} | {labels} | {spec.meaning} |")
    return "\n".join(rows) + "\n"


def _describe(label: Label) -> str:
    if label.values:
        return f"`{label.name}`: {', '.join(label.values)}"
    return f"`{label.name}` ({label.note})" if label.note else f"`{label.name}`"
