"""The checks of ``regcred check``: pure functions of a ``Snapshot`` of the cluster.

Hints say what to do. Nothing here prints a credential: Secrets are reported by key names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from webhook.diagnose.rbac import Permission
from webhook.diagnose.report import Result, fail, ok
from webhook.diagnose.webhookcheck import WebhookFacts, webhook_checks
from webhook.jsontypes import JsonObject
from webhook.providers.gcr import KEY_FILE
from webhook.pullsecrets import REGISTRY_LABEL, expires_at
from webhook.registries import Registry, RegistryList, parse_registries
from webhook.yamlload import ConfigError

# A token closer than this to its expiry fails the running-regcred check: the refresher
# renews at 2/3 of a token's life (hours for ECR and GCR), so this means renewals fail.
TOKEN_MARGIN = 600.0


@dataclass
class Snapshot:
    namespace: str
    configmap: str
    configmap_text: str | None  # None: the ConfigMap or its key is missing
    credentials: Mapping[str, Mapping[str, bytes] | None]  # secretRef -> data (None: not found)
    webhook: WebhookFacts
    service_account: str
    rbac: list[tuple[Permission, bool]]
    status: JsonObject | None
    status_error: str | None
    managed: list[JsonObject]
    foreign: list[tuple[str, str]]  # (namespace, name) of Secrets named regcred-<id> without our label
    now: float


def run_checks(snap: Snapshot) -> list[Result]:
    results, parsed = registry_list(snap.configmap_text, f"{snap.namespace}/{snap.configmap}")
    registries = parsed.registries if parsed else []
    return [*results, *credentials(registries, snap.credentials, snap.namespace), *webhook_checks(snap.webhook),
            *rbac(snap.rbac, snap.namespace, snap.service_account),
            *running(registries, snap.status, snap.status_error, snap.now, snap.namespace),
            *managed(registries, snap.managed, snap.foreign, snap.now)]


def registry_list(text: str | None, where: str) -> tuple[list[Result], RegistryList | None]:
    name = f"registry list (ConfigMap {where})"
    if text is None:
        return [fail("Registry list", name, "not found, or no key registries.yaml",
                     "install with the chart's `registries` value, or create the ConfigMap")], None
    try:
        registries = parse_registries(text)
    except ConfigError as exc:
        return [fail("Registry list", name, "; ".join(exc.errors),
                     "fix registries.yaml (`regcred check-config FILE` gives the same messages offline); "
                     "regcred keeps using its last good list meanwhile")], None
    return [ok("Registry list", name, f"{len(registries.registries)} registries")], registries


def required_keys(registry: Registry) -> tuple[str, ...]:
    """The keys a credentials Secret must have for the registry's provider."""
    return {"basic": ("username", "password"), "ecr": ("aws_access_key_id", "aws_secret_access_key"),
            "gcr": (KEY_FILE,)}[registry.type]


def credentials(registries: list[Registry], secrets: Mapping[str, Mapping[str, bytes] | None],
                namespace: str) -> list[Result]:
    results = []
    for registry in registries:
        name = f"{registry.id}: credentials Secret"
        if registry.secret_ref is None:
            results.append(ok("Credentials", name, "none (the cloud identity of regcred's Pod is used)"))
            continue
        where = f"{namespace}/{registry.secret_ref}"
        data = secrets.get(registry.secret_ref)
        if data is None:
            results.append(fail("Credentials", name, f"{where} not found",
                                f"create it in {namespace} with the keys {', '.join(required_keys(registry))}"))
            continue
        missing = [key for key in required_keys(registry) if not data.get(key)]
        if missing:
            results.append(fail("Credentials", name, f"{where} lacks key(s) {', '.join(missing)}",
                                f"add {', '.join(missing)} to {where} (type {registry.type} needs "
                                f"{', '.join(required_keys(registry))})"))
        else:
            results.append(ok("Credentials", name, f"{where} has {', '.join(required_keys(registry))}"))
    return results


def rbac(answers: list[tuple[Permission, bool]], namespace: str, account: str) -> list[Result]:
    subject = f"system:serviceaccount:{namespace}:{account}"
    missing = [permission for permission, allowed in answers if not allowed]
    if not missing:
        return [ok("RBAC", f"{subject} has the {len(answers)} permissions regcred needs")]
    return [fail("RBAC", f"{subject} may not {permission.describe(namespace)}", "missing rule",
                 "restore the chart's ClusterRole/Role (helm upgrade), or add this rule")
            for permission in missing]


def running(registries: list[Registry], status: JsonObject | None, error: str | None, now: float,
            namespace: str) -> list[Result]:
    if status is None:
        return [fail("Running regcred", "status endpoint", error or "no answer",
                     f"is regcred running? `kubectl -n {namespace} get pods`, then its logs")]
    results = [ok("Running regcred", "caches synced") if status.get("cachesSynced") else
               fail("Running regcred", "caches synced", "not yet",
                    "regcred cannot list or watch Secrets/namespaces: see the RBAC checks and its logs")]
    known = status.get("registries") or {}
    for registry in registries:
        results.append(_registry_state(registry.id, known.get(registry.id), now, status.get("configGeneration")))
    return results


def _registry_state(registry_id: str, state: JsonObject | None, now: float, generation: object) -> Result:
    name = f"{registry_id}: credentials"
    if state is None or state.get("type") is None:
        return fail("Running regcred", name, f"regcred does not have this registry (config generation {generation})",
                    "it reloads the ConfigMap within seconds; if it persists, its logs say why the list was rejected")
    error = state.get("lastError") or {}
    if not state.get("credentialsAvailable"):
        why = f"last error {error.get('class')} at {error.get('time')}" if error else "no mint yet"
        return fail("Running regcred", name, f"unavailable ({why})",
                    "check the credentials Secret and the cloud identity; regcred's log names the reason")
    expires = state.get("expiresAt")
    if expires is not None and _seconds(expires) - now < TOKEN_MARGIN:
        return fail("Running regcred", name, f"the token expires at {expires}",
                    "renewals are failing: see the last error in regcred's log")
    detail = f"minted at {state.get('lastSuccess')}, " + (f"expires at {expires}" if expires else "no expiry")
    return ok("Running regcred", name, detail)


def managed(registries: list[Registry], secrets: list[JsonObject], foreign: list[tuple[str, str]],
            now: float) -> list[Result]:
    counts: dict[str, int] = defaultdict(int)
    stale: dict[str, list[str]] = defaultdict(list)
    for secret in secrets:
        meta = secret.get("metadata") or {}
        registry_id = (meta.get("labels") or {}).get(REGISTRY_LABEL, "")
        counts[registry_id] += 1
        expiry = expires_at(secret)
        if expiry is not None and expiry <= now:
            stale[registry_id].append(meta.get("namespace", ""))
    results = []
    for registry in registries:
        name = f"{registry.id}: managed Secrets"
        if stale[registry.id]:
            results.append(fail("Managed Secrets", name,
                                f"{counts[registry.id]}, stale in {', '.join(sorted(stale[registry.id]))}",
                                "the leader rewrites Secrets before they expire: is a regcred replica the "
                                "leader, and are its mints succeeding (see above)?"))
        else:
            results.append(ok("Managed Secrets", name, f"{counts[registry.id]}, none stale"))
    if foreign:
        where = ", ".join(f"{namespace}/{name}" for namespace, name in sorted(foreign))
        results.append(fail("Managed Secrets", "Secrets with regcred's names that regcred does not own", where,
                            "regcred never overwrites them, so Pods there get no credentials for that "
                            "registry: delete them (regcred recreates its own) or rename them"))
    return results


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(UTC).timestamp()
