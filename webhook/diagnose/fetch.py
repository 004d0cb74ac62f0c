"""The one place ``check`` and ``explain`` read the cluster, the webhook and /status.

Everything is read with the official client as whoever runs the command (usually a cluster
admin); Secrets are reduced to their metadata and key names as soon as they arrive, except
credentials Secrets, whose values are only tested for presence.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import kubernetes
from kubernetes.client import (
    AdmissionregistrationV1Api,
    ApiClient,
    ApiException,
    AuthorizationV1Api,
    Configuration,
    CoreV1Api,
    DiscoveryV1Api,
    V1ObjectMeta,
    V1Secret,
    V1SubjectAccessReviewStatus,
    VersionApi,
)

from webhook.diagnose.checks import Snapshot
from webhook.diagnose.rbac import Permission, needed
from webhook.diagnose.webhookcheck import Served, WebhookFacts, hook_of
from webhook.jsontypes import JsonObject
from webhook.kube.client import describe_api_error
from webhook.pullsecrets import MANAGED_BY, MANAGED_BY_LABEL
from webhook.registries import RegistryList, parse_registries
from webhook.yamlload import ConfigError

T = TypeVar("T")
REGISTRIES_KEY = "registries.yaml"
TIMEOUT = 10


class Unreachable(Exception):
    """The cluster cannot be reached, the kubeconfig cannot be used, or the API server refuses
    one of our reads (exit code 2: no check result can be trusted)."""


def read(kubeconfig: Path | None, context: str | None, reader: Callable[[ApiClient], T]) -> T:
    """``reader`` run against the cluster of ``kubeconfig``; raises Unreachable."""
    with connect(kubeconfig, context) as api:
        try:
            return reader(api)
        except ApiException as exc:
            raise Unreachable(f"the API server refused a read: {describe_api_error(exc)}") from None


def connect(kubeconfig: Path | None, context: str | None) -> ApiClient:
    configuration = Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST") \
                and not os.environ.get("KUBECONFIG"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            path = os.fspath(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG", "~/.kube/config")
            kubernetes.config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        raise Unreachable(f"cannot load the kubeconfig: {exc}") from None
    api = ApiClient(configuration)
    try:
        VersionApi(api).get_code(_request_timeout=TIMEOUT)
    except Exception as exc:  # urllib3 raises many kinds; all mean the same here
        raise Unreachable(f"cannot reach the API server at {configuration.host}: {describe_api_error(exc)}") from None
    return api


def _or_none(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    try:
        return call(*args, _request_timeout=TIMEOUT, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def registry_text(core: CoreV1Api, namespace: str, configmap: str) -> str | None:
    found = _or_none(core.read_namespaced_config_map, configmap, namespace)
    return None if found is None else (found.data or {}).get(REGISTRIES_KEY)


def parsed(text: str | None) -> RegistryList | None:
    try:
        return parse_registries(text) if text is not None else None
    except ConfigError:
        return None


def _metadata(found: Any) -> V1ObjectMeta:
    # The client's models make every field optional; the API server always sends metadata.
    return cast(V1ObjectMeta, found.metadata)


def secret_meta(secret: V1Secret) -> JsonObject:
    """A Secret as metadata only: what the checks may look at."""
    meta = _metadata(secret)
    return {"metadata": {"name": meta.name, "namespace": meta.namespace, "labels": dict(meta.labels or {}),
                         "annotations": dict(meta.annotations or {}),
                         "creationTimestamp": meta.creation_timestamp.timestamp() if meta.creation_timestamp else None},
            "type": secret.type, "keys": sorted(secret.data or {})}


def snapshot(api: ApiClient, *, namespace: str, name: str, service_account: str, webhook_address: str | None,
             status_url: str | None) -> Snapshot:
    core = CoreV1Api(api)
    configmap = f"{name}-registries"
    text = registry_text(core, namespace, configmap)
    registries = parsed(text)
    refs = sorted({r.secret_ref for r in registries.registries if r.secret_ref}) if registries else []
    credentials: dict[str, dict[str, bytes] | None] = {}
    for ref in refs:
        found = _or_none(core.read_namespaced_secret, ref, namespace)
        credentials[ref] = None if found is None else {k: base64.b64decode(v) for k, v in (found.data or {}).items()}
    managed = [secret_meta(s) for s in core.list_secret_for_all_namespaces(
        label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}", _request_timeout=TIMEOUT).items]
    status, status_error = read_status(api, namespace, name, status_url)
    now = time.time()
    return Snapshot(namespace, configmap, text, credentials, webhook_facts(api, namespace, name, webhook_address, now),
                    service_account, access_reviews(api, permissions(core, namespace, name, configmap, registries),
                                                     namespace, service_account),
                    status, status_error, managed, foreign(core, registries), now)


def permissions(core: CoreV1Api, namespace: str, name: str, configmap: str,
                registries: RegistryList | None) -> list[Permission]:
    """What this install needs; the managed-certificate rows when its certificate Secret exists."""
    certificate = f"{name}-webhook-cert"
    managed = _or_none(core.read_namespaced_secret, certificate, namespace) is not None
    return needed(configmap, registries, certificate=certificate if managed else None,
                  webhook=name if managed else None)


def foreign(core: CoreV1Api, registries: RegistryList | None) -> list[tuple[str, str]]:
    found = []
    for registry in registries.registries if registries else []:
        for secret in core.list_secret_for_all_namespaces(field_selector=f"metadata.name={registry.secret_name}",
                                                          _request_timeout=TIMEOUT).items:
            meta = _metadata(secret)
            if (meta.labels or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                found.append((cast(str, meta.namespace), cast(str, meta.name)))
    return found


def webhook_facts(api: ApiClient, namespace: str, name: str, address: str | None, now: float) -> WebhookFacts:
    found = _or_none(AdmissionregistrationV1Api(api).read_mutating_webhook_configuration, name)
    own = _or_none(CoreV1Api(api).read_namespace, namespace)
    facts = WebhookFacts(name, namespace, None if found is None else api.sanitize_for_serialization(found),
                         dict(_metadata(own).labels or {}) if own else {}, now=now)
    if facts.config is None:
        return facts
    client = hook_of(facts.config).get("clientConfig") or {}
    ca = base64.b64decode(client.get("caBundle") or "")
    service = client.get("service")
    if service is None:
        parts = urlsplit(client.get("url") or "")
        facts.served = probe(parts.hostname or "", parts.port or 443, parts.hostname or "", ca)
        return facts
    facts.endpoints_ready = ready_endpoints(api, service["namespace"], service["name"])
    if address:
        host, _, port = address.rpartition(":")
        facts.served = probe(host, int(port), f"{service['name']}.{service['namespace']}.svc", ca)
    return facts


def ready_endpoints(api: ApiClient, namespace: str, service: str) -> int:
    slices = DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}", _request_timeout=TIMEOUT).items
    return sum(1 for s in slices for e in s.endpoints or []
               if e.conditions is None or e.conditions.ready is not False)


def probe(host: str, port: int, server_name: str, ca_pem: bytes) -> Served:
    """Connect with the caBundle as the only trust anchor, as the API server does."""
    address = f"{host}:{port}"
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        return Served(address, False, "the caBundle holds no readable PEM certificate")
    try:
        with socket.create_connection((host, port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return Served(address, False, f"certificate not verified ({exc.verify_message})")
    except (OSError, ssl.SSLError) as exc:
        return Served(address, False, f"cannot connect ({type(exc).__name__}: {exc.strerror or exc})")
    not_after = cert.get("notAfter")
    # notAfter is a string in getpeercert()'s answer; the union covers its other keys.
    return Served(address, True, None, ssl.cert_time_to_seconds(cast(str, not_after)) if not_after else None)


def access_reviews(api: ApiClient, permissions: list[Permission], namespace: str,
                   account: str) -> list[tuple[Permission, bool]]:
    authz = AuthorizationV1Api(api)
    user = f"system:serviceaccount:{namespace}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    answers = []
    for permission in permissions:
        attributes = {"verb": permission.verb, "resource": permission.resource, "group": permission.group,
                      "namespace": namespace if permission.own_namespace else "", "name": permission.name or ""}
        # The client serializes a dict body as it is; its annotation names only the model.
        review = authz.create_subject_access_review({  # type: ignore[arg-type]
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}, _request_timeout=TIMEOUT)
        # The API server answers every review with a status.
        answers.append((permission, bool(cast(V1SubjectAccessReviewStatus, review.status).allowed)))
    return answers


def read_status(api: ApiClient, namespace: str, name: str, url: str | None) -> tuple[JsonObject | None, str | None]:
    """/status from ``url``, else through the API server's proxy to the metrics Service."""
    try:
        if url:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 (a user-given URL)
                return json.loads(answer.read()), None
        answer = CoreV1Api(api).connect_get_namespaced_service_proxy_with_path(
            f"http:{name}-metrics:http-metrics", namespace, "status", _preload_content=False, _request_timeout=TIMEOUT)
        # With _preload_content=False the client returns urllib3's response, not the str it declares.
        return json.loads(answer.data), None  # type: ignore[attr-defined]
    except (OSError, urllib.error.URLError, ApiException, ValueError) as exc:
        return None, f"cannot read /status: {describe_api_error(exc)}"


ExplainInputs = tuple[JsonObject, RegistryList | None, dict[str, str], dict[str, JsonObject | None]]


def explain_inputs(api: ApiClient, namespace: str, name: str, regcred_namespace: str,
                   release: str) -> ExplainInputs | None:
    """The Pod, the registry list, the namespace's labels and its regcred-<id> Secrets' metadata
    (``explain``'s arguments but the time); None when the Pod does not exist."""
    core = CoreV1Api(api)
    found = _or_none(core.read_namespaced_pod, name, namespace)
    if found is None:
        return None
    registries = parsed(registry_text(core, regcred_namespace, f"{release}-registries"))
    own = _or_none(core.read_namespace, namespace)
    secrets: dict[str, JsonObject | None] = {}
    for registry in registries.registries if registries else []:
        secret = _or_none(core.read_namespaced_secret, registry.secret_name, namespace)
        secrets[registry.secret_name] = None if secret is None else secret_meta(secret)
    labels = dict(_metadata(own).labels or {}) if own else {}
    return api.sanitize_for_serialization(found), registries, labels, secrets
