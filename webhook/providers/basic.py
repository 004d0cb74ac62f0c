"""Static username/password registries: Docker Hub, Artifactory, Harbor, Azure ACR."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.providers import Credential, CredentialUnavailable
from webhook.registries import Registry


class BasicProvider:
    def mint(self, registry: Registry, material: Mapping[str, bytes] | None) -> Credential:
        if material is None:
            raise CredentialUnavailable(f"{registry.id}: credentials Secret {registry.secret_ref!r} not found")
        missing = [key for key in ("username", "password") if not material.get(key)]
        if missing:
            raise CredentialUnavailable(
                f"{registry.id}: credentials Secret {registry.secret_ref!r} lacks key(s) {', '.join(missing)}"
            )
        try:
            username = material["username"].decode().strip()
            password = material["password"].decode().strip()
        except UnicodeDecodeError:
            raise CredentialUnavailable(f"{registry.id}: credentials are not valid UTF-8") from None
        return Credential(username, password, None)
