"""Tenancy: which namespaces may receive a registry's credentials.

A registry entry may carry ``namespaces`` (names or shell-style globs) and/or
``namespaceSelector`` (a standard Kubernetes label selector over the namespace's labels).
With neither, every namespace qualifies; with both, a namespace must satisfy both. The
decision is pure: labels come from the caller (a watch-fed namespace cache in a cluster).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Protocol

from webhook.registries import Registry

# The namespace opt-out. The webhook configuration's namespaceSelector keeps the API server from
# calling for such namespaces, but anyone can POST a review: admission and the refresher check it
# too, from the namespace cache.
OPT_OUT_LABEL = "regcred.io/inject"
OPT_OUT_VALUE = "disabled"


def namespace_opted_out(labels: dict[str, str] | None) -> bool:
    return labels is not None and labels.get(OPT_OUT_LABEL) == OPT_OUT_VALUE


def namespace_allowed(registry: Registry, namespace: str, labels: dict[str, str] | None) -> bool:
    """Whether ``namespace`` may receive ``registry``'s credentials.

    ``labels`` is None only in local mode without a cluster, where selectors are not
    evaluated (regcred says so at startup). In a cluster, a namespace missing from the cache
    is passed as ``{}``, so a selector that needs labels refuses it.
    """
    return refusal(registry, namespace, labels) is None


def refusal(registry: Registry, namespace: str, labels: dict[str, str] | None) -> str | None:
    """Why ``namespace`` may not receive ``registry``'s credentials, or None if it may."""
    if namespace_opted_out(labels):
        return f"the namespace is labelled {OPT_OUT_LABEL}={OPT_OUT_VALUE}"
    if registry.namespaces is not None and not any(fnmatchcase(namespace, p) for p in registry.namespaces):
        return f"{namespace} is not in namespaces {registry.namespaces}"
    if registry.namespace_selector is not None and labels is not None:
        if not registry.namespace_selector.matches(labels):
            return "the namespace labels do not match namespaceSelector"
    return None


class NamespaceUnknown(Exception):
    """The namespace's labels could not be learned (not cached, and the API server did not say)."""


class NamespaceMissing(Exception):
    """The API server says the namespace does not exist: only a forged review claims one."""


class NamespaceLabels(Protocol):
    async def labels(self, namespace: str) -> dict[str, str] | None:
        """The namespace's labels; None when no cluster is configured. Raises NamespaceUnknown,
        or NamespaceMissing when the API server says there is no such namespace."""
        ...


class NoCluster:
    """Local mode: namespace labels are unknown, so selectors are not evaluated."""

    async def labels(self, namespace: str) -> dict[str, str] | None:
        return None
