"""Which Secrets regcred watches, following the registry list, and those RBAC does not cover.

With ``rbac.secretAccess: names`` the chart grants regcred its Secrets by name: the pull
Secrets ``regcred-<id>`` of the registries it renders (ClusterRole) and their ``secretRef``
credentials Secrets plus the CI tokens Secret (Role, regcred's namespace). A registry added to
the ConfigMap outside Helm names Secrets no rule covers. Its watch is refused; that registry
is reported (the client's log line and ``regcred_kube_forbidden_total`` for the permission, a
log line naming the Secret, and a Warning Event on the ConfigMap, where ``kubectl describe``
shows it) while every other registry keeps its watch and Pods keep being admitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from webhook.kube.events import EventRecorder, ObjectRef
from webhook.kube.named import NamedInformers
from webhook.kube.permissions import MissingPermission
from webhook.registries import RegistryList

NOT_COVERED_REASON = "SecretNotCoveredByRBAC"


def pull_secret_names(registries: RegistryList) -> set[str]:
    return {registry.secret_name for registry in registries.registries}


def credentials_secret_names(registries: RegistryList, extra: Iterable[str] = ()) -> set[str]:
    return {registry.secret_ref for registry in registries.registries if registry.secret_ref} | set(extra)


class Coverage:
    """Feeds both watch sets from each applied registry list; reports refused watches."""

    def __init__(self, pull: NamedInformers, credentials: NamedInformers, *, extra_credentials: Iterable[str] = (),
                 recorder: EventRecorder | None = None, configmap: ObjectRef | None = None):
        self._pull = pull
        self._credentials = credentials
        self._extra = tuple(extra_credentials)
        self._recorder = recorder
        self._configmap = configmap
        self._registries = RegistryList()
        self._pending: set[asyncio.Task[bool]] = set()
        # No names before the first registry list: a watch set with no names counts as synced,
        # and readiness would not wait for the credentials Secrets that list then names. The CI
        # tokens Secret (extra) is wanted with every list, an empty one included.

    def applied(self, registries: RegistryList) -> None:
        """The ActiveRegistries listener."""
        self._registries = registries
        self._pull.set_names(pull_secret_names(registries))
        self._credentials.set_names(credentials_secret_names(registries, self._extra))

    def forbidden(self, secret: str, missing: MissingPermission) -> None:
        """The NamedInformers callback: a Warning Event on the ConfigMap naming the registries."""
        if self._recorder is None or self._configmap is None:
            return
        ids = sorted(r.id for r in self._registries.registries if secret in (r.secret_name, r.secret_ref))
        used_by = f"registry {', '.join(ids)}" if ids else "the CI API"
        message = (f"{used_by}: RBAC does not cover Secret {secret} (regcred may not {missing}); add the registry "
                   "through the chart's values (rbac.secretAccess names) or set rbac.secretAccess cluster")
        task = asyncio.get_running_loop().create_task(self._recorder.record(
            self._configmap, type="Warning", reason=NOT_COVERED_REASON, message=message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
