"""Pure Pod mutation: which images a Pod pulls and the JSON Patch that adds our pull Secrets.

No network, no clock, no globals. The patch is computed against the raw Pod dict the API
server sent (never a re-serialized typed object, whose unknown fields would turn into
``remove`` ops) and must apply to that object: an API server rejects the Pod when a patch
fails to apply, even under ``failurePolicy: Ignore``.
"""

from __future__ import annotations

from collections.abc import Iterable

OPT_OUT_ANNOTATION = "regcred.io/inject"
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pointer(*segments: str | int) -> str:
    """A JSON pointer; '~' and '/' in a segment are escaped as RFC 6901 requires."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def pod_images(pod: dict) -> list[str]:
    """Image strings of init, regular and ephemeral containers, in order, without repeats."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    images: dict[str, None] = {}
    for list_name in _CONTAINER_LISTS:
        containers = spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for container in containers:
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image:
                images.setdefault(image, None)
    return list(images)


def opted_out(pod: dict) -> bool:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return False
    return str(annotations.get(OPT_OUT_ANNOTATION, "")).strip().lower() == "false"


def pull_secret_patch(pod: dict, secret_names: Iterable[str]) -> list[dict]:
    """Ops adding each name to ``spec.imagePullSecrets`` unless already there.

    Absent or null list: one ``add`` of the whole array (``/-`` on a missing array fails).
    Existing list: one ``add .../-`` per new name, existing entries untouched. A Pod that
    already holds every name yields ``[]``, which is what reinvocation relies on.
    """
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return []
    current = spec.get("imagePullSecrets")
    if current is not None and not isinstance(current, list):
        return []  # not a list: the API server will reject the Pod anyway; do not make it worse
    # Only string names count: a hostile {"name": {...}} is unhashable and names nothing.
    names = (entry.get("name") for entry in current or [] if isinstance(entry, dict))
    present = {name for name in names if isinstance(name, str)}
    wanted = [name for name in dict.fromkeys(secret_names) if name not in present]
    if not wanted:
        return []
    if current is None:
        return [{"op": "add", "path": pointer("spec", "imagePullSecrets"), "value": [{"name": n} for n in wanted]}]
    # Entries that are not objects are left alone (a real API server never sends them: Go
    # cannot decode them); ours are appended after them, each an object.
    return [{"op": "add", "path": pointer("spec", "imagePullSecrets", "-"), "value": {"name": n}} for n in wanted]
