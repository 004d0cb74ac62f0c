"""Every knob of ``regcred serve``, validated once.

Flags win over environment variables (``REGCRED_<FLAG>``, e.g. ``REGCRED_LOG_LEVEL``), which
win over defaults.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_EXCLUDED = ("kube-system", "kube-public", "kube-node-lease")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Path | None = None
    secrets_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Names the serving certificate must cover (the webhook Service's DNS name in a cluster).
    tls_names: tuple[str, ...] = ()
    dev_certs_dir: Path = Path("certs/dev")
    host: str = "0.0.0.0"
    # 10250: GKE private clusters let the control plane reach nodes only on 443 and 10250.
    port: int = Field(default=10250, ge=1, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)  # 0 turns the metrics listener off
    namespace: str | None = None
    exclude_namespaces: tuple[str, ...] = DEFAULT_EXCLUDED
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    # Admission connections and requests in progress at once; beyond it, 503 at once. Each may
    # hold up to max_body_bytes, so 100 x 3 MiB stays under the chart's 512 Mi memory limit.
    # The cold burst the project promises (1,000 admissions at once, bench.cold_burst) must not
    # meet a 503 (under failurePolicy Ignore, a Pod created without its pull Secrets); uvicorn
    # counts open connections against it, the API servers' idle keep-alive ones included.
    limit_concurrency: int = Field(default=2000, ge=2)
    # A body not fully received within this many seconds gets 408 and a closed connection. The
    # API server sends a review at once and gives up after timeoutSeconds (5 s in the chart).
    body_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # The API server waits timeoutSeconds (5 s in the chart); answer well within it.
    admission_budget_seconds: float = Field(default=3.0, gt=0, le=25)
    # Kubernetes: a cluster is used when any of these is set or regcred runs in a Pod.
    registries_configmap: str | None = None
    kubeconfig: Path | None = None
    in_cluster: bool = False
    kube_qps: float = Field(default=20.0, gt=0)
    kube_burst: int = Field(default=40, ge=1)
    leader_elect: bool = True
    prune: bool = True
    refresh_interval_seconds: float = Field(default=60.0, gt=0)
    # CA bundle (PEM) the admission listener requires client certificates to be signed by: the
    # API server presents one through its AdmissionConfiguration kubeConfigFile. Off unless set.
    client_ca: Path | None = None
    ci_port: int | None = Field(default=None, ge=1, le=65535)  # the CI credentials API, off unless set
    ci_tokens: Path | None = None
    ci_tokens_secret: str | None = None
    # Proxies (CIDRs) whose X-Forwarded-For the CI listener believes; no listener trusts any other.
    ci_trusted_proxies: tuple[str, ...] = ()
    file_poll_seconds: float = Field(default=2.0, gt=0)
    refresh_fraction: float = Field(default=2 / 3, gt=0, lt=1)
    # tls.mode managed: regcred keeps its serving certificate in this Secret (own namespace) and
    # the caBundle of this MutatingWebhookConfiguration current.
    webhook_cert_secret: str | None = None
    webhook_configuration: str | None = None
    webhook_cert_sans: tuple[str, ...] = ()
    webhook_cert_validity_seconds: float = Field(default=365 * 86400.0, ge=1)
    webhook_ca_validity_seconds: float = Field(default=5 * 365 * 86400.0, ge=1)

    @field_validator("exclude_namespaces", "tls_names", "webhook_cert_sans", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ci_trusted_proxies", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        try:
            return tuple(str(ipaddress.ip_network(part, strict=False)) for part in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--ci-trusted-proxies takes CIDRs separated by commas: {exc}") from None

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.webhook_cert_secret and not (self.tls_cert and self.webhook_cert_sans):
            raise ValueError("--webhook-cert-secret needs --tls-cert/--tls-key (where the certificate is written) "
                             "and --webhook-cert-sans (the names it is valid for)")
        return self

    @property
    def uses_cluster(self) -> bool:
        return bool(self.registries_configmap or self.kubeconfig or self.in_cluster)

    @property
    def excluded(self) -> frozenset[str]:
        """Namespaces never mutated: the configured list plus regcred's own namespace."""
        own = {self.namespace} if self.namespace else set()
        return frozenset(self.exclude_namespaces) | own
