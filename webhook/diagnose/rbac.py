"""Every permission regcred needs, as one table: what ``regcred check`` asks the API server
about through SubjectAccessReviews for regcred's ServiceAccount.

Keep it in step with charts/regcred/templates/clusterrole.yaml and role.yaml (the chart's
default, ``rbac.secretAccess: names``). A row with ``own_namespace`` is needed only in
regcred's namespace; the others cluster-wide. ``name`` narrows a row to one object;
``{configmap}`` is the registry list ConfigMap's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.registries import RegistryList


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


PERMISSIONS: tuple[Permission, ...] = (
    # Pull Secrets go into every Pod's namespace: create cannot be narrowed by name.
    Permission("create", "secrets"),
    # The namespace cache: opt-outs, labels for namespaceSelector, deletions; get for a
    # namespace the watch has not delivered yet.
    *(Permission(verb, "namespaces") for verb in ("get", "list", "watch")),
    # The registry list.
    *(Permission(verb, "configmaps", own_namespace=True, name="{configmap}") for verb in ("list", "watch")),
    # Leader election.
    Permission("create", "leases", "coordination.k8s.io", own_namespace=True),
    Permission("get", "leases", "coordination.k8s.io", own_namespace=True, name="regcred"),
    Permission("update", "leases", "coordination.k8s.io", own_namespace=True, name="regcred"),
    # Events on the registry list ConfigMap.
    Permission("create", "events", own_namespace=True),
)
# Per registry, in every namespace: its pull Secret regcred-<id>, by name (rbac.secretAccess names).
PULL_SECRET_VERBS = ("get", "list", "watch", "update", "delete")
# Per secretRef, in regcred's namespace: the credentials Secret, by name.
CREDENTIALS_VERBS = ("list", "watch")


def needed(configmap: str, registries: RegistryList | None = None, *, certificate: str | None = None,
           webhook: str | None = None) -> list[Permission]:
    """The table with the install's names filled in: the pull Secret and credentials Secret of
    every registry in the list, and with ``tls.mode: managed`` the ``certificate`` Secret and
    the ``webhook`` configuration whose caBundle regcred keeps."""
    rows = [Permission(p.verb, p.resource, p.group, p.own_namespace,
                       p.name.format(configmap=configmap) if p.name else None) for p in PERMISSIONS]
    for registry in registries.registries if registries else []:
        rows += [Permission(verb, "secrets", name=registry.secret_name) for verb in PULL_SECRET_VERBS]
    refs = sorted({r.secret_ref for r in registries.registries if r.secret_ref}) if registries else []
    rows += [Permission(verb, "secrets", own_namespace=True, name=ref) for ref in refs for verb in CREDENTIALS_VERBS]
    if certificate:
        rows += [Permission(verb, "secrets", own_namespace=True, name=certificate) for verb in ("get", "update")]
    if webhook:
        rows += [Permission(verb, "mutatingwebhookconfigurations", "admissionregistration.k8s.io", name=webhook)
                 for verb in ("get", "patch")]
    return rows
