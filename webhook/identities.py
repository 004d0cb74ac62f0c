"""Which registry entries hand out equivalent credentials, whatever their tenancy says.

Tenancy (``namespaces``, ``namespaceSelector``) limits where an entry's Secret goes. But a
token carries the rights of the identity that minted it, not of the entry: two entries
minted from one identity give equivalent tokens (an ECR token opens every repository the
identity can read, a GCR token every repository it can pull). If their tenancy differs, the
narrower one is only as narrow as the wider: ``regcred check-config`` says so. Pure: it looks
at the list only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from webhook.registries import ECR_PUBLIC_HOST, Registry


def identity_of(registry: Registry) -> tuple[str, ...]:
    """What the credential is minted from; equal keys mean equivalent credentials."""
    source = registry.secret_ref or ""  # "": the Pod's own (ambient) identity
    if registry.type == "ecr":
        service = "ecr-public" if registry.host == ECR_PUBLIC_HOST else "ecr"
        return service, source, (registry.ecr.role_arn if registry.ecr else None) or ""
    return registry.type, source


def _describe(identity: tuple[str, ...]) -> str:
    kind, source, *role = identity
    who = f"credentials Secret {source!r}" if source else "regcred's own cloud identity"
    if role and role[0]:
        who += f" assuming {role[0]}"
    return f"{kind} {who}"


def _tenancy(registry: Registry) -> str:
    selector = registry.namespace_selector.model_dump(mode="json") if registry.namespace_selector else None
    return json.dumps([sorted(registry.namespaces or []) or None, selector], sort_keys=True)


def shared_identity_warnings(registries: Iterable[Registry]) -> list[str]:
    """One line per pair of entries with one identity and different tenancy (each pair once,
    against the first entry of that identity whose tenancy differs)."""
    first: dict[tuple[str, ...], list[tuple[int, Registry]]] = {}
    warnings = []
    for index, registry in enumerate(registries):
        identity = identity_of(registry)
        for other_index, other in first.get(identity, []):
            if _tenancy(other) != _tenancy(registry):
                warnings.append(
                    f"registries[{index}] ({registry.id}) and registries[{other_index}] ({other.id}) both use "
                    f"{_describe(identity)} but differ in tenancy: their tokens are equivalent, so a namespace "
                    f"granted either can use both (give each tenancy its own identity)")
                break
        first.setdefault(identity, []).append((index, registry))
    return warnings
