"""The admit decision for one AdmissionRequest: which registries, which Secrets, which patch.

Everything the decision needs arrives as arguments; matching and patching are pure
(``registries.Matcher``, ``mutation``), and the only effect, ensuring Secrets, goes through
the Provisioner. The answer is always "allowed": this webhook must never be the reason a
Pod fails to start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from webhook.activeregistries import ActiveRegistries
from webhook.admission.models import AdmissionRequest
from webhook.jsontypes import JsonObject
from webhook.metrics import Metrics
from webhook.mutation import opted_out, pod_images, pull_secret_patch
from webhook.pod import PodMetadata, PodParts
from webhook.provisioner import Provisioner
from webhook.registries import Registry
from webhook.tenancy import NamespaceLabels, NamespaceMissing, NamespaceUnknown, namespace_allowed, namespace_opted_out

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Decision:
    result: str  # patched | unchanged | skipped | no_namespace | error
    patch: list[JsonObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Admitter:
    def __init__(self, config: ActiveRegistries, provisioner: Provisioner, excluded_namespaces: frozenset[str],
                 namespaces: NamespaceLabels, metrics: Metrics):
        self._config = config
        self._provisioner = provisioner
        self._excluded = excluded_namespaces
        self._namespaces = namespaces
        self._metrics = metrics

    async def admit(self, request: AdmissionRequest) -> Decision:
        pod = request.object
        if not _is_pod_create(request) or pod is None:
            return Decision("skipped")
        namespace = request.namespace or _pod_namespace(pod)
        if not namespace or namespace in self._excluded or opted_out(pod):
            return Decision("skipped")
        matched, invalid = self._matched(pod)
        labels, known = await self._labels(namespace) if matched else (None, "known")
        if namespace_opted_out(labels):  # enforced here too: anyone can POST a review
            return Decision("skipped")
        registries, refused = self._granted(matched, namespace, labels, unknown=known == "unknown")
        if known == "missing":
            # Only a forged review names a namespace the API server does not have: no write, no
            # repair. Answered as a dry run is, so the answer does not say the namespace is missing.
            patch = pull_secret_patch(pod, [registry.secret_name for registry in registries])
            return Decision("no_namespace", patch, invalid + refused)
        provisioned = []
        if registries:
            provisioned = await self._provisioner.provision(namespace, registries, dry_run=bool(request.dry_run))
        names = [p.registry.secret_name for p in provisioned if p.reference]
        warnings = invalid + refused + [p.warning for p in provisioned if p.warning]
        patch = pull_secret_patch(pod, names)
        return Decision("patched" if patch else "unchanged", patch, warnings)

    async def _labels(self, namespace: str) -> tuple[dict[str, str] | None, str]:
        """The namespace's labels (None in local mode), and "known", "unknown" or "missing"."""
        try:
            return await self._namespaces.labels(namespace), "known"
        except NamespaceMissing:
            return {}, "missing"
        except NamespaceUnknown:  # selectors fail closed, and say why: the Pod may be recreated later
            return {}, "unknown"

    def _granted(self, registries: list[Registry], namespace: str, labels: dict[str, str] | None, *,
                 unknown: bool) -> tuple[list[Registry], list[str]]:
        """Split matched registries into those the namespace may receive, and warnings for the rest."""
        granted, warnings = [], []
        for registry in registries:
            if namespace_allowed(registry, namespace, labels):
                granted.append(registry)
                continue
            self._metrics.admission_denied_registry.labels(registry.id).inc()
            log.warning("registry not granted to namespace", extra={"registry": registry.id, "namespace": namespace,
                                                                    "labels_unknown": unknown})
            warnings.append((f"regcred: labels of namespace {namespace} unknown; registry {registry.id} not granted"
                             if unknown and registry.namespace_selector is not None else
                             f"regcred: registry {registry.id} is not granted to namespace {namespace}")[:120])
        return granted, warnings

    def _matched(self, pod: PodParts) -> tuple[list[Registry], list[str]]:
        """The registries the Pod's images match, and a warning for each image that is no reference."""
        registries: dict[str, Registry] = {}
        invalid: list[str] = []
        for image in pod_images(pod):
            match = self._config.matcher.match(image)
            if match.registry is not None:
                registries.setdefault(match.registry.id, match.registry)
            elif match.error is not None:
                # The Pod is admitted anyway: its pull will fail with the runtime's own message.
                self._metrics.admission_warnings.labels("invalid_image").inc()
                log.warning("image is not a valid reference", extra={"reason": match.error})
                invalid.append(f"regcred: image {image} is not a valid reference"[:120])
        return list(registries.values()), invalid


def _is_pod_create(request: AdmissionRequest) -> bool:
    # matchPolicy: Equivalent may send pods under another version; group and kind decide.
    return (
        request.kind.group == ""
        and request.kind.kind == "Pod"
        and request.operation == "CREATE"
        and not request.sub_resource
    )


def _pod_namespace(pod: PodParts) -> str | None:
    namespace = pod.metadata.namespace if isinstance(pod.metadata, PodMetadata) else None
    return namespace if isinstance(namespace, str) else None
