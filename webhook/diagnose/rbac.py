"""Every permission regcred needs, as one table: what ``regcred check`` asks the API server
about through SubjectAccessReviews for regcred's ServiceAccount.

Keep it in step with charts/regcred/templates/clusterrole.yaml and role.yaml. A row with
``own_namespace`` is needed only in regcred's namespace; the others cluster-wide. ``name``
narrows a row to one object; ``{configmap}`` is the registry list ConfigMap's name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    own_namespace: bool = False
    name: str | None = None

    def describe(self, namespace: str) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f"in namespace {namespace}" if self.own_namespace else "cluster-wide"
        return f"{self.verb} {resource}" + (f" named {self.name}" if self.name else "") + f" {where}"


SECRET_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")

PERMISSIONS: tuple[Permission, ...] = (
    # Pull Secrets in every Pod's namespace, the credentials and CI tokens Secrets in our own.
    *(Permission(verb, "secrets") for verb in SECRET_VERBS),
    # The namespace cache: opt-outs, labels for namespaceSelector, deletions.
    Permission("list", "namespaces"),
    Permission("watch", "namespaces"),
    # Events on the Pods and Secrets regcred acted on.
    Permission("create", "events"),
    Permission("create", "events", "events.k8s.io"),
    # The registry list.
    *(Permission(verb, "configmaps", own_namespace=True, name="{configmap}") for verb in ("get", "list", "watch")),
    # Leader election.
    Permission("create", "leases", "coordination.k8s.io", own_namespace=True),
    Permission("get", "leases", "coordination.k8s.io", own_namespace=True, name="regcred"),
    Permission("update", "leases", "coordination.k8s.io", own_namespace=True, name="regcred"),
)


def needed(configmap: str) -> list[Permission]:
    """The table with the install's names filled in."""
    return [Permission(p.verb, p.resource, p.group, p.own_namespace,
                       p.name.format(configmap=configmap) if p.name else None) for p in PERMISSIONS]
