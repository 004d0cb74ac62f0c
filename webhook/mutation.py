"""Pure Pod mutation: which images a Pod pulls and the JSON Patch that adds our pull Secrets.

No network, no clock, no globals. The patch is computed against the values the API server
sent (``PodParts`` keeps ``imagePullSecrets`` as sent, never a re-serialized typed object)
and must apply to that object: an API server rejects the Pod when a patch fails to apply,
even under ``failurePolicy: Ignore``. A field that is not the shape read here is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from webhook.jsontypes import JsonObject
from webhook.pod import Container, PodMetadata, PodParts, PodSpec

OPT_OUT_ANNOTATION = "regcred.io/inject"


def pointer(*segments: str | int) -> str:
    """A JSON pointer; '~' and '/' in a segment are escaped as RFC 6901 requires."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


# Built once: every patched admission uses them.
_PULL_SECRETS = pointer("spec", "imagePullSecrets")
_PULL_SECRETS_END = pointer("spec", "imagePullSecrets", "-")


def pod_images(pod: PodParts) -> list[str]:
    """Image strings of init, regular and ephemeral containers, in order, without repeats."""
    spec = pod.spec
    if not isinstance(spec, PodSpec):
        return []
    images: dict[str, None] = {}
    for containers in (spec.init_containers, spec.containers, spec.ephemeral_containers):
        if not isinstance(containers, list):
            continue
        for container in containers:
            image = container.image if isinstance(container, Container) else None
            if isinstance(image, str) and image:
                images.setdefault(image, None)
    return list(images)


def opted_out(pod: PodParts) -> bool:
    annotations = pod.metadata.annotations if isinstance(pod.metadata, PodMetadata) else None
    if not isinstance(annotations, dict):
        return False
    return str(annotations.get(OPT_OUT_ANNOTATION, "")).strip().lower() == "false"


def pull_secret_patch(pod: PodParts, secret_names: Iterable[str]) -> list[JsonObject]:
    """Ops adding each name to ``spec.imagePullSecrets`` unless already there.

    Absent or null list: one ``add`` of the whole array (``/-`` on a missing array fails).
    Existing list: one ``add .../-`` per new name, existing entries untouched. A Pod that
    already holds every name yields ``[]``, which is what reinvocation relies on.
    """
    spec = pod.spec
    if not isinstance(spec, PodSpec):
        return []
    current = spec.image_pull_secrets
    if current is not None and not isinstance(current, list):
        return []  # not a list: the API server will reject the Pod anyway; do not make it worse
    # Only string names count: a hostile {"name": {...}} is unhashable and names nothing.
    present = set()
    for entry in current or ():
        if isinstance(entry, dict) and isinstance(name := entry.get("name"), str):
            present.add(name)
    wanted = [name for name in dict.fromkeys(secret_names) if name not in present]
    if not wanted:
        return []
    if current is None:
        return [{"op": "add", "path": _PULL_SECRETS, "value": [{"name": n} for n in wanted]}]
    # Entries that are not objects are left alone (a real API server never sends them: Go
    # cannot decode them); ours are appended after them, each an object.
    return [{"op": "add", "path": _PULL_SECRETS_END, "value": {"name": n}} for n in wanted]
