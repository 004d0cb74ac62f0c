"""Checks of the MutatingWebhookConfiguration: where it points, whether its caBundle verifies
the certificate the webhook serves, and whether its fields have the values the chart sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from webhook.diagnose.report import Result, fail, ok, warn
from webhook.jsontypes import JsonObject
from webhook.labels import LabelSelector

HOOK_NAME = "pods.regcred.io"
CERT_MARGIN = 7 * 86400.0
GROUP = "Webhook"

# What the chart sets, and why a different value hurts (charts/regcred/templates/mutatingwebhookconfiguration.yaml).
EXPECTED: dict[str, tuple[object, str]] = {
    "failurePolicy": ("Ignore", "with Fail, every Pod creation is refused while regcred is down"),
    "timeoutSeconds": (5, "regcred answers within its 3 s admission budget; longer stalls kubectl, "
                          "shorter cuts off cold writes"),
    "sideEffects": ("NoneOnDryRun", "regcred writes Secrets but never on dry-run; other values make "
                                    "dry-run requests fail or write"),
    "reinvocationPolicy": ("IfNeeded", "sidecars injected after regcred then get no pull secrets"),
}


@dataclass(frozen=True)
class Served:
    """What connecting to the webhook with the caBundle as the only trust anchor gave."""

    address: str
    verified: bool
    error: str | None = None
    not_after: float | None = None


@dataclass
class WebhookFacts:
    name: str
    namespace: str
    config: JsonObject | None
    namespace_labels: dict[str, str] = field(default_factory=dict)
    endpoints_ready: int | None = None  # ready addresses behind the Service (service case)
    served: Served | None = None  # None: not probed (Service without --webhook-address)
    now: float = 0.0


def hook_of(config: JsonObject) -> JsonObject:
    hooks = config.get("webhooks") or [{}]
    return next((hook for hook in hooks if hook.get("name") == HOOK_NAME), hooks[0])


def webhook_checks(facts: WebhookFacts) -> list[Result]:
    if facts.config is None:
        return [fail(GROUP, f"MutatingWebhookConfiguration {facts.name}", "not found",
                     "Pods get no pull secrets at all: reinstall the chart (helm upgrade --install)")]
    hook = hook_of(facts.config)
    client = hook.get("clientConfig") or {}
    return [_target(client, facts), _served(client, facts), _expiry(facts), *_policy(hook), _selector(hook, facts)]


def _target(client: JsonObject, facts: WebhookFacts) -> Result:
    service = client.get("service")
    if service is None:
        return ok(GROUP, "target", f"url {client.get('url')}")
    where = f"Service {service.get('namespace')}/{service.get('name')}"
    if not facts.endpoints_ready:
        return fail(GROUP, "target", f"{where} has no ready endpoints",
                    f"no regcred Pod is ready: `kubectl -n {service.get('namespace')} get pods`; "
                    "meanwhile Pods are created without pull secrets")
    return ok(GROUP, "target", f"{where} with {facts.endpoints_ready} ready endpoint(s)")


def _served(client: JsonObject, facts: WebhookFacts) -> Result:
    name = "caBundle verifies the served certificate"
    if not client.get("caBundle"):
        return fail(GROUP, name, "the caBundle is empty",
                    "set tls.mode (selfSigned, certManager) or tls.provided.caBundle and upgrade the chart")
    served = facts.served
    if served is None:
        return warn(GROUP, name, "not checked: the webhook is behind a Service",
                    "run `kubectl -n NAMESPACE port-forward svc/NAME 8443:443` and pass "
                    "--webhook-address 127.0.0.1:8443")
    if served.verified:
        return ok(GROUP, name, served.address)
    return fail(GROUP, name, f"{served.address}: {served.error}",
                "the API server rejects the webhook's certificate, so Pods get no pull secrets: put the CA "
                "that signed the serving certificate in caBundle (cert-manager: check the cainjector)")


def _expiry(facts: WebhookFacts) -> Result:
    name = "serving certificate validity"
    served = facts.served
    if served is None or not served.verified or served.not_after is None:
        return ok(GROUP, name, "not checked (no verified connection)")  # the check above says why
    when = datetime.fromtimestamp(served.not_after, UTC).isoformat(timespec="seconds")
    if served.not_after - facts.now < CERT_MARGIN:
        return fail(GROUP, name, f"expires at {when}",
                    "renew it (cert-manager renews on its own; selfSigned: helm upgrade; provided: replace the Secret)")
    return ok(GROUP, name, f"expires at {when}")


def _policy(hook: JsonObject) -> list[Result]:
    results = []
    for key, (value, reason) in EXPECTED.items():
        actual = hook.get(key)
        if actual == value:
            results.append(ok(GROUP, key, str(value)))
        else:
            results.append(warn(GROUP, key, f"{actual} (the chart sets {value})", reason))
    return results


def _selector(hook: JsonObject, facts: WebhookFacts) -> Result:
    name = f"namespaceSelector excludes {facts.namespace}"
    labels = {"kubernetes.io/metadata.name": facts.namespace, **facts.namespace_labels}
    try:
        selector = LabelSelector.model_validate(hook.get("namespaceSelector") or {})
    except ValidationError:
        return warn(GROUP, name, "the selector could not be read", "compare it with the chart's")
    if selector.matches(labels):
        return fail(GROUP, name, f"{facts.namespace} is sent to regcred",
                    "regcred's own Pods would then need regcred to start: restore the chart's namespaceSelector")
    return ok(GROUP, name)
