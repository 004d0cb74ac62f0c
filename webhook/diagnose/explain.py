"""``regcred explain pod``: for each container image of a live Pod, what regcred did or would
do, and one verdict. Pure: the Pod, the registry list, the namespace's labels and the
metadata of the Pod namespace's ``regcred-<id>`` Secrets come in as data.

It needs nothing regcred remembers, so it works for Pods regcred never saw (created while
the webhook was down, or before their registry was in the list).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from webhook.jsontypes import JsonObject
from webhook.pullsecrets import MANAGED_BY, MANAGED_BY_LABEL, expires_at
from webhook.registries import Matcher, Registry, RegistryList
from webhook.tenancy import refusal

PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff")


@dataclass(frozen=True)
class Row:
    container: str
    image: str
    normalized: str
    registry: Registry | None
    refused: str | None  # why the namespace is not granted the registry
    secret: str  # missing, foreign, fresh, stale, "-"
    expires: str | None
    referenced: bool
    waiting: str  # the container's waiting reason and message, or ""

    @property
    def pull_failed(self) -> bool:
        return self.waiting.split(":", 1)[0] in PULL_ERRORS


def explain(pod: JsonObject, registries: RegistryList | None, labels: dict[str, str],
            secrets: dict[str, JsonObject | None], now: float) -> tuple[list[Row], str]:
    namespace = pod["metadata"]["namespace"]
    if registries is None:
        return [], "regcred has no valid registry list: run `regcred check`"
    matcher = Matcher(registries)
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    referenced = {ref.get("name") for ref in spec.get("imagePullSecrets") or []}
    waiting = _waiting(status)
    rows = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            found = matcher.match(container.get("image") or "")
            registry = found.registry
            secret, expires = _secret(secrets.get(registry.secret_name) if registry else None, registry, now)
            rows.append(Row(container["name"], container.get("image") or "",
                            found.normalized or f"invalid: {found.error}", registry,
                            refusal(registry, namespace, labels) if registry else None, secret, expires,
                            bool(registry and registry.secret_name in referenced), waiting.get(container["name"], "")))
    return rows, verdict(rows, namespace)


def _waiting(status: JsonObject) -> dict[str, str]:
    found = {}
    for kind in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for container in status.get(kind) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                message = f": {waiting['message']}" if waiting.get("message") else ""
                found[container["name"]] = waiting["reason"] + message
    return found


def _secret(secret: JsonObject | None, registry: Registry | None, now: float) -> tuple[str, str | None]:
    if registry is None:
        return "-", None
    if secret is None:
        return "missing", None
    if ((secret.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return "foreign", None
    expiry = expires_at(secret)
    if expiry is None:
        return "fresh", None
    when = datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds") if expiry > 0 else "unreadable"
    return ("fresh" if expiry > now else "stale"), when


def verdict(rows: list[Row], namespace: str) -> str:
    """The most likely reason first: what would stop the pull even if everything after it were fine."""
    for row in rows:
        if row.normalized.startswith("invalid"):
            return f"container {row.container}: the image is not a valid reference ({row.normalized})"
    for row in rows:
        registry = row.registry
        if registry is None:
            continue
        if row.refused:
            allowed = registry.namespaces if registry.namespaces is not None else "namespaceSelector"
            return (f"the namespace {namespace} is not granted registry {registry.id} ({row.refused}; "
                    f"namespaces: {allowed}): grant it in the registry list, or use another registry")
        if row.secret == "foreign":
            return (f"the Secret {registry.secret_name} in {namespace} is not regcred's, and regcred never "
                    "overwrites it: delete it (regcred then writes its own) and recreate the Pod")
        if not row.referenced:
            return (f"the Pod does not reference {registry.secret_name}: it was created before regcred knew "
                    f"registry {registry.id}, or while the webhook was down: recreate it")
        if row.secret == "missing":
            return (f"the Pod references {registry.secret_name} but it does not exist in {namespace}: "
                    "run `regcred check` (is regcred running and allowed to write Secrets?)")
        if row.secret == "stale":
            return (f"the Secret {registry.secret_name} expired at {row.expires}: regcred is not renewing it; "
                    "run `regcred check`")
    for row in rows:
        if row.registry is not None and row.pull_failed:
            ref = row.registry.secret_ref
            return (f"the Secret is fresh and referenced: the registry refused these credentials; check the "
                    f"credentials {'Secret ' + ref if ref else 'identity'} of registry {row.registry.id}")
    for row in rows:
        if row.pull_failed:
            return (f"container {row.container}: {row.normalized} matches no registry in regcred's list: "
                    "add its registry, or check the image name (`regcred match`)")
    return "nothing regcred can see stands in the way of these pulls"


def as_json(rows: list[Row]) -> list[JsonObject]:
    return [{"container": r.container, "image": r.image, "normalized": r.normalized,
             "registry": r.registry.id if r.registry else None,
             "granted": None if r.registry is None else r.refused is None, "refusal": r.refused,
             "secret": r.secret, "expires": r.expires, "referenced": r.referenced, "waiting": r.waiting or None}
            for r in rows]


def render(rows: list[Row]) -> list[str]:
    table = [("CONTAINER", "IMAGE", "REGISTRY", "GRANTED", "SECRET", "REFERENCED", "WAITING")]
    for row in rows:
        registry = row.registry.id if row.registry else "-"
        granted = "-" if row.registry is None else ("yes" if row.refused is None else "no")
        secret = row.secret + (f" (expires {row.expires})" if row.expires else "")
        referenced = "-" if row.registry is None else ("yes" if row.referenced else "no")
        table.append((row.container, row.normalized, registry, granted, secret, referenced, row.waiting or "-"))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    # The last column is left unpadded: widths is one shorter than a line.
    return ["  ".join(f"{cell:<{width}}" for cell, width in zip(line, widths, strict=False)) + "  " + line[-1]
            for line in table]
