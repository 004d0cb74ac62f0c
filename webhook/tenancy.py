"""Tenancy: which namespaces may receive a registry's credentials.

A registry entry may carry ``namespaces`` (names or shell-style globs) and/or
``namespaceSelector`` (a standard Kubernetes label selector over the namespace's labels).
With neither, every namespace qualifies; with both, a namespace must satisfy both. The
decision is pure: labels come from the caller (a watch-fed namespace cache in a cluster).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webhook.fielderror import FieldError

if TYPE_CHECKING:
    from webhook.registries import Registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _label_key(value: str) -> str:
    if len(value) > 317 or not _LABEL_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid label key")
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a valid label value")
    return value


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` (as ``kubectl label`` takes them) -> labels; ValueError names the bad pair."""
    labels = {}
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"{pair!r} is not a k=v pair")
        labels[_label_key(key.strip())] = _label_value(value.strip())
    return labels


class LabelRequirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    _key = field_validator("key")(classmethod(lambda cls, v: _label_key(v)))

    @model_validator(mode="after")
    def _values(self) -> LabelRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldError("values", f"required for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldError("values", f"must be empty for operator {self.operator}")
        for value in self.values:
            _label_value(value)
        return self


class LabelSelector(_Strict):
    """A standard Kubernetes label selector, evaluated against a namespace's labels."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelRequirement] = Field(default_factory=list, alias="matchExpressions")

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            _label_key(key)
            _label_value(label)
        return value

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(_satisfies(requirement, labels) for requirement in self.match_expressions)


def _satisfies(requirement: LabelRequirement, labels: dict[str, str]) -> bool:
    present = requirement.key in labels
    if requirement.operator == "Exists":
        return present
    if requirement.operator == "DoesNotExist":
        return not present
    inside = present and labels[requirement.key] in requirement.values
    return inside if requirement.operator == "In" else not inside



def namespace_allowed(registry: Registry, namespace: str, labels: dict[str, str] | None) -> bool:
    """Whether ``namespace`` may receive ``registry``'s credentials.

    ``labels`` is None only in local mode without a cluster, where selectors are not
    evaluated (regcred says so at startup). In a cluster, a namespace missing from the cache
    is passed as ``{}``, so a selector that needs labels refuses it.
    """
    return refusal(registry, namespace, labels) is None


def refusal(registry: Registry, namespace: str, labels: dict[str, str] | None) -> str | None:
    """Why ``namespace`` may not receive ``registry``'s credentials, or None if it may."""
    if registry.namespaces is not None and not any(fnmatchcase(namespace, p) for p in registry.namespaces):
        return f"{namespace} is not in namespaces {registry.namespaces}"
    if registry.namespace_selector is not None and labels is not None:
        if not registry.namespace_selector.matches(labels):
            return "the namespace labels do not match namespaceSelector"
    return None


class NamespaceUnknown(Exception):
    """The namespace's labels could not be learned (not cached, and the API server did not say)."""


class NamespaceLabels(Protocol):
    async def labels(self, namespace: str) -> dict[str, str] | None:
        """The namespace's labels; None when no cluster is configured. Raises NamespaceUnknown."""
        ...


class NoCluster:
    """Local mode: namespace labels are unknown, so selectors are not evaluated."""

    async def labels(self, namespace: str) -> dict[str, str] | None:
        return None
