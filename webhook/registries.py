"""The registry list: the model users write, its validation, and the longest-prefix matcher.

The same YAML is the ConfigMap key ``registries.yaml`` in a cluster and a file locally.
Every validation error names the entry and the field (``registries[2].url: ...``) so a
platform engineer can fix a broken list without guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from webhook.fielderror import FieldError
from webhook.images import InvalidReference, normalize_image, normalize_root
from webhook.labels import LabelSelector
from webhook.yamlload import ConfigError, validate_yaml

_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])$")
# A Kubernetes object name (DNS-1123 subdomain): secretRef names a Secret.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# ECR private registries: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn], or the
# dual-stack form <account>.dkr-ecr.<region>.on.aws. The region is read from the host.
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.(?:dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"|dkr-ecr\.(?P<region2>[a-z0-9-]+)\.on\.aws)$"
)
ECR_PUBLIC_HOST = "public.ecr.aws"
# ACR login servers: <name>.azurecr.io, or the China (.cn) and US Government (.us) clouds
# suffixes; <name> may carry a "-<hash>" domain-name-label suffix.
_ACR_HOST = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\.azurecr\.(?:io|cn|us)$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_GCR_HOST = re.compile(r"^(?:gcr\.io|[a-z0-9-]+\.gcr\.io|[a-z0-9-]+\.pkg\.dev)$")
# The Matcher remembers this many distinct images (a few MB at most); longer references,
# which no real image has (distribution caps names at 255), are never remembered.
_REMEMBER_IMAGES = 4096
_REMEMBER_LENGTH = 512




class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class EcrOptions(_Strict):
    role_arn: str | None = Field(default=None, alias="roleArn")
    external_id: str | None = Field(default=None, alias="externalId")

    @field_validator("role_arn")
    @classmethod
    def _arn(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$", value):
            raise ValueError("must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        return value


class GcrOptions(_Strict):
    mode: Literal["accessToken", "jsonKey"] = "accessToken"
    # Token endpoints besides Google's a key's token_uri may name (a private endpoint);
    # webhook/providers/gcr.py says why anything else is refused.
    allowed_token_uris: tuple[str, ...] = Field(default=(), alias="allowedTokenUris")

    @field_validator("allowed_token_uris")
    @classmethod
    def _https(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, uri in enumerate(value):
            # Not echoed: a URL with user:password in it would put them in a log line.
            if not re.match(r"^https://[^/?#@\s]+(/[^?#\s]*)?$", uri):
                raise ValueError(f"entry {index} must be an https:// URL without credentials, query or fragment")
        return value


class AcrOptions(_Strict):
    # The Entra tenant. Default: the secretRef Secret's tenant_id, else the tenant of the
    # identity (workload or managed identity), read from its access token.
    tenant_id: str | None = Field(default=None, alias="tenantId")

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not _GUID.match(value):
            raise ValueError("must be a tenant ID (a GUID, 00000000-0000-0000-0000-000000000000)")
        return value


class Registry(_Strict):
    id: str
    url: str
    type: Literal["basic", "ecr", "gcr", "acr"]
    secret_ref: str | None = Field(default=None, alias="secretRef")
    expose_to_ci: bool = Field(default=False, alias="exposeToCI")
    ecr: EcrOptions | None = None
    gcr: GcrOptions | None = None
    acr: AcrOptions | None = None
    # Tenancy: which namespaces may receive this registry's credentials (neither: all).
    namespaces: list[str] | None = None
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not re.match(r"^[a-z0-9*?\[\]!-]{1,63}$", pattern):
                raise ValueError(f"{pattern!r} is not a namespace name or shell-style glob")
        if value is not None and not value:
            raise ValueError("must not be empty (leave it out to allow every namespace)")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                "must be 2-50 characters of lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return normalize_root(value)
        except InvalidReference as exc:
            raise ValueError(str(exc)) from None

    @field_validator("secret_ref")
    @classmethod
    def _secret_ref(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
            raise ValueError("must be a valid Kubernetes Secret name")
        return value

    @model_validator(mode="after")
    def _by_type(self) -> Registry:
        host = self.host
        if self.type == "basic" and self.secret_ref is None:
            raise FieldError("secretRef", "required for type basic")
        if self.type != "ecr" and self.ecr is not None:
            raise FieldError("ecr", "only allowed with type ecr")
        if self.type != "gcr" and self.gcr is not None:
            raise FieldError("gcr", "only allowed with type gcr")
        if self.type != "acr" and self.acr is not None:
            raise FieldError("acr", "only allowed with type acr")
        if self.type == "ecr" and host != ECR_PUBLIC_HOST and not _ECR_HOST.match(host):
            raise FieldError(
                "url",
                "type ecr needs an ECR host (<account>.dkr.ecr.<region>.amazonaws.com, "
                "<account>.dkr-ecr.<region>.on.aws or public.ecr.aws)"
            )
        if self.type == "gcr" and not _GCR_HOST.match(host):
            raise FieldError("url", "type gcr needs a gcr.io, *.gcr.io or *.pkg.dev host")
        if self.type == "acr" and not _ACR_HOST.match(host):
            raise FieldError("url",
                             "type acr needs an ACR login server (<name>.azurecr.io, .azurecr.cn or .azurecr.us)")
        if self.gcr is not None and self.gcr.mode == "jsonKey" and self.secret_ref is None:
            raise FieldError("secretRef", "required with gcr.mode jsonKey (the key is what gets written)")
        return self

    @property
    def host(self) -> str:
        return self.url.split("/", 1)[0]

    @property
    def secret_name(self) -> str:
        """Name of the pull Secret regcred writes into Pod namespaces."""
        return f"regcred-{self.id}"

    @property
    def aws_region(self) -> str:
        """The region an ECR registry lives in, read from its host."""
        if self.host == ECR_PUBLIC_HOST:
            return "us-east-1"  # the ECR Public API exists only there
        match = _ECR_HOST.match(self.host)
        if match is None:
            raise ValueError(f"{self.id} is not an ECR registry")
        return match.group("region") or match.group("region2")


class RegistryList(_Strict):
    registries: list[Registry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RegistryList:
        errors: list[str] = []
        seen_ids: dict[str, int] = {}
        seen_urls: dict[str, int] = {}
        for index, registry in enumerate(self.registries):
            if registry.id in seen_ids:
                errors.append(f"registries[{index}].id: duplicate of registries[{seen_ids[registry.id]}]")
            if registry.url in seen_urls:
                first = seen_urls[registry.url]
                errors.append(f"registries[{index}].url: {registry.url} duplicates registries[{first}]")
            seen_ids.setdefault(registry.id, index)
            seen_urls.setdefault(registry.url, index)
        if errors:
            raise ConfigError(errors)
        return self

    def by_id(self, registry_id: str) -> Registry | None:
        return next((r for r in self.registries if r.id == registry_id), None)


def parse_registries(text: str) -> RegistryList:
    """Parse and validate a registries.yaml document; raise ConfigError naming every problem."""
    return validate_yaml(text, RegistryList, "registries")


@dataclass(frozen=True, slots=True)
class Match:
    image: str
    normalized: str | None
    registry: Registry | None
    error: str | None = None


class Matcher:
    """Longest-prefix matching of normalized image names on path-segment boundaries.

    Answers are remembered per image string: normalizing a reference (distribution/reference's
    grammar, in pure Python) costs tens of microseconds, and a cluster admits the same few
    hundred images over and over. A Matcher is rebuilt whenever the registry list changes, so
    a remembered answer never outlives the list it came from.
    """

    def __init__(self, registries: RegistryList):
        self._roots = {registry.url: registry for registry in registries.registries}
        self._seen: dict[str, Match] = {}

    def match_name(self, normalized: str) -> Registry | None:
        candidate = normalized
        while True:
            registry = self._roots.get(candidate)
            if registry is not None:
                return registry
            cut = candidate.rfind("/")
            if cut < 0:
                return None
            candidate = candidate[:cut]

    def match(self, image: str) -> Match:
        found = self._seen.get(image)
        if found is None:
            found = self._match(image)
            if len(image) <= _REMEMBER_LENGTH:
                if len(self._seen) >= _REMEMBER_IMAGES:
                    self._seen.clear()  # hostile or huge image churn: start over rather than grow
                self._seen[image] = found
        return found

    def _match(self, image: str) -> Match:
        try:
            normalized = normalize_image(image)
        except InvalidReference as exc:
            return Match(image, None, None, str(exc))
        return Match(image, normalized, self.match_name(normalized))
