"""Image references and registry roots, normalized the way the container runtime does.

Parsing follows distribution/reference (``ParseNormalizedNamed``) through the
docker-image-py port, so ``nginx`` is ``docker.io/library/nginx`` and
``index.docker.io/x/y`` is ``docker.io/x/y`` exactly as kubelet and containerd see them.
Tags and digests are dropped: credentials are scoped by repository path, never by tag.
"""

from __future__ import annotations

from docker_image.reference import InvalidReference as _ParserError
from docker_image.reference import Reference
from docker_image.regexp import ImageRegexps

DOCKER_HUB = "docker.io"
_LEGACY_DOCKER_HUB = "index.docker.io"
# distribution/reference caps a repository name at 255 characters; the limit here only
# keeps hostile input (10,000-character images) away from the regular expressions.
_MAX_REFERENCE = 4096
_PARSER_PREFIX = "invalid reference format"


class InvalidReference(ValueError):
    """An image reference or registry root that a container runtime would refuse."""


def normalize_image(reference: str) -> str:
    """``acme/app:1.0`` -> ``docker.io/acme/app``; the host is lower-cased (DNS is case-insensitive)."""
    if not isinstance(reference, str) or not reference:
        raise InvalidReference("image reference is empty")
    if len(reference) > _MAX_REFERENCE:
        raise InvalidReference("image reference is too long")
    try:
        parsed = Reference.parse_normalized_named(reference)
    except _ParserError as exc:
        # The parser says "invalid reference format[: detail]"; say "invalid" once, with all of it.
        detail = _reason(exc).removeprefix(_PARSER_PREFIX).removeprefix(":").strip()
        raise InvalidReference(f"invalid image reference: {detail}" if detail else "invalid image reference") from None
    domain, path = parsed.repository["domain"], parsed.repository["path"]
    return f"{domain.lower()}/{path}"


def normalize_root(url: str) -> str:
    """Normalize a registry root (``host[:port][/path]``, no scheme, tag or digest).

    Unlike an image, a root is never given ``library/``: ``docker.io/acme`` is the ``acme``
    organisation on Docker Hub, and ``docker.io`` alone is all of Docker Hub.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidReference("must not be empty")
    url = url.strip()
    if "://" in url:
        raise InvalidReference("must not contain a scheme (write registry.example.com/team, not https://...)")
    if len(url) > _MAX_REFERENCE:
        raise InvalidReference("is too long")
    host, _, path = url.rstrip("/").partition("/")
    if not _looks_like_host(host):
        raise InvalidReference(
            f"must start with a registry host such as docker.io or registry.example.com, got {host!r}"
        )
    if not ImageRegexps.ANCHORED_HOSTNAME_REGEXP.match(host):
        raise InvalidReference(f"invalid registry host {host!r}")
    host = host.lower()
    if host == _LEGACY_DOCKER_HUB:
        host = DOCKER_HUB
    if not path:
        return host
    if not ImageRegexps.REMOTE_NAME_REGEXP.fullmatch(path):
        raise InvalidReference(
            f"invalid repository path {path!r}: lowercase components separated by '/', no tag or digest"
        )
    return f"{host}/{path}"


def _looks_like_host(component: str) -> bool:
    # distribution/reference's rule for the first path component of an image name.
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def _reason(exc: Exception) -> str:
    """The parser's whole message. The port raises some with %-style arguments left in a tuple."""
    if not exc.args:
        return type(exc).__name__
    message, arguments = str(exc.args[0]), exc.args[1:]
    if arguments:
        try:
            message %= arguments
        except (TypeError, ValueError):
            message = " ".join([message, *map(str, arguments)])
    return " ".join(message.split())  # one line, whatever the input held
