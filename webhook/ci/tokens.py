"""Service-user tokens for the CI credentials endpoint: the stored list, lookup and creation.

Only SHA-256 hashes are stored (``tokens.yaml``: ``tokens: [{name, role, sha256, registries}]``),
in the Secret named by ``--ci-tokens-secret`` or in ``--ci-tokens FILE``. A leaked list grants
nothing: the tokens themselves are 256-bit random strings shown once by
``regcred ci-token create``. Like the registry list, a broken token list never replaces a
working one; the errors go to the log and the last good list keeps answering.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webhook.yamlload import ConfigError, describe_validation_error, validate_yaml

log = logging.getLogger(__name__)

# Roles that may fetch registry credentials; any other role is valid in the list but denied here.
CREDENTIAL_ROLES = frozenset({"ArtefactContributor", "Administrator"})
DEFAULT_ROLE = "ArtefactContributor"
# The prefix lets secret scanners (GitHub, GitLab, trufflehog) recognise a leaked token.
TOKEN_PREFIX = "regcred_"
_TOKEN_BYTES = 32  # 256 bits of entropy

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_ROLE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Same shape as Registry.id; ids need not exist yet (a registry may be added after the token).
_REGISTRY_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])$")


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: str
    sha256: str
    registries: tuple[str, ...] | None = None  # None: every registry exposed to CI

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            )
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _ROLE.match(value):
            raise ValueError(f"must be a role name such as {DEFAULT_ROLE}")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        # Never echo the value: someone may have pasted the token itself here by mistake.
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256 (not the token)")
        return value

    @field_validator("registries")
    @classmethod
    def _registries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            # An empty list reads as "all" to some and "none" to others; make the author choose.
            raise ValueError("must not be empty; omit the key to allow every registry exposed to CI")
        bad = [item for item in value if not _REGISTRY_ID.match(item)]
        if bad:
            raise ValueError(f"not registry ids: {', '.join(map(repr, bad))}")
        return value

    @property
    def may_fetch(self) -> bool:
        return self.role in CREDENTIAL_ROLES

    def allows(self, registry_id: str) -> bool:
        return self.registries is None or registry_id in self.registries


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenEntry, ...] = Field(default_factory=tuple)

    @model_validator(mode="after")
    def _unique(self) -> TokenFile:
        errors: list[str] = []
        names: dict[str, int] = {}
        hashes: dict[str, int] = {}
        for index, entry in enumerate(self.tokens):
            if entry.name in names:
                # Audit lines name the service user; two entries with one name would be ambiguous.
                errors.append(f"tokens[{index}].name: duplicate of tokens[{names[entry.name]}]")
            if entry.sha256 in hashes:
                errors.append(f"tokens[{index}].sha256: duplicate of tokens[{hashes[entry.sha256]}]")
            names.setdefault(entry.name, index)
            hashes.setdefault(entry.sha256, index)
        if errors:
            raise ConfigError(errors)
        return self


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name: str, role: str = DEFAULT_ROLE, registries: list[str] | None = None) -> tuple[str, TokenEntry]:
    """A new random token and the entry to store for it. Raises ConfigError on bad arguments."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    document: dict[str, object] = {"name": name, "role": role, "sha256": hash_token(token)}
    if registries is not None:
        document["registries"] = registries
    try:
        return token, TokenEntry.model_validate(document)
    except ValidationError as exc:
        raise ConfigError([describe_validation_error(error) for error in exc.errors()]) from None


def entry_yaml(entry: TokenEntry) -> str:
    """``entry`` as one item of the ``tokens:`` list, ready to paste."""
    return yaml.safe_dump([entry.model_dump(exclude_none=True, mode="json")], sort_keys=False)


def parse_tokens(text: str) -> TokenFile:
    """Parse and validate a tokens.yaml document; raise ConfigError naming every problem."""
    pasted = [number for number, line in enumerate(text.splitlines(), 1) if line.strip().startswith(TOKEN_PREFIX)]
    if pasted:
        # The likeliest mistake: ``ci-token create > tokens.yaml`` keeps the token with the entry.
        raise ConfigError([f"line {number}: a token itself, which must not be stored here; keep only the entry "
                           "ci-token create prints after it, under tokens:" for number in pasted])
    try:
        return validate_yaml(text, TokenFile, "tokens", show_problem=False)
    except ConfigError as exc:
        if exc.errors[0].startswith("top level must be"):
            raise ConfigError([exc.errors[0] + " (put the entries ci-token create prints under tokens:)"]) from None
        raise


class TokenList:
    """The active token list; a broken list is reported and the last good one kept."""

    def __init__(self) -> None:
        self._entries: tuple[TokenEntry, ...] = ()
        self.ready = False
        self.errors: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches ``token``, compared in constant time against every entry."""
        digest = hash_token(token)
        found = None
        # No early exit: the time taken must not tell which entry (or whether any) matched.
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.sha256):
                found = entry
        return found

    def apply_text(self, text: str, source: str) -> bool:
        """Validate ``text`` and make it active; on error keep the last good list. Returns validity."""
        try:
            parsed = parse_tokens(text)
        except ConfigError as exc:
            return self._reject(exc.errors, source)
        self._entries, self.ready, self.errors = parsed.tokens, True, []
        log.info("ci token list applied", extra={"source": source, "tokens": len(parsed.tokens)})
        idle = [entry.name for entry in parsed.tokens if not entry.may_fetch]
        if idle:
            # Most likely a misspelt role; such tokens can never fetch credentials.
            log.warning("ci tokens whose role cannot fetch credentials", extra={"source": source, "names": idle})
        return True

    def apply_file(self, path: Path) -> bool:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problem = getattr(exc, "strerror", None) or type(exc).__name__
            return self._reject([f"cannot read {path}: {problem}"], str(path))
        return self.apply_text(text, str(path))

    def apply_error(self, error: str, source: str) -> bool:
        """Report a list that could not be had at all (e.g. the Secret lacks ``tokens.yaml``)."""
        return self._reject([error], source)

    def _reject(self, errors: list[str], source: str) -> bool:
        self.errors = errors
        kept = "keeping the last good list" if self.ready else "no ci token is accepted"
        log.error("ci token list rejected; %s", kept, extra={"source": source, "errors": errors})
        return False
