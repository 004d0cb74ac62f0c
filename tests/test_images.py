"""Image reference and registry root normalization (distribution/reference rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.images import InvalidReference, normalize_image, normalize_root

DIGEST = "sha256:" + "a" * 64

NORMALIZED = [
    pytest.param("nginx", "docker.io/library/nginx", id="official-image"),
    pytest.param("nginx:1.27", "docker.io/library/nginx", id="official-with-tag"),
    pytest.param("nginx@" + DIGEST, "docker.io/library/nginx", id="official-with-digest"),
    pytest.param("nginx:1.27@" + DIGEST, "docker.io/library/nginx", id="tag-and-digest"),
    pytest.param("acme/app", "docker.io/acme/app", id="hub-org"),
    pytest.param("acme/app:v2", "docker.io/acme/app", id="hub-org-tag"),
    pytest.param("acme/team/app", "docker.io/acme/team/app", id="hub-nested"),
    pytest.param("docker.io/nginx", "docker.io/library/nginx", id="explicit-hub-official"),
    pytest.param("docker.io/acme/app", "docker.io/acme/app", id="explicit-hub"),
    pytest.param("index.docker.io/x/y", "docker.io/x/y", id="legacy-hub-alias"),
    pytest.param("index.docker.io/nginx", "docker.io/library/nginx", id="legacy-hub-official"),
    pytest.param("docker.io/library/nginx:latest", "docker.io/library/nginx", id="canonical"),
    pytest.param("registry.example.com/team/app:1", "registry.example.com/team/app", id="private-host"),
    pytest.param("registry.example.com:5000/team/app", "registry.example.com:5000/team/app", id="host-port"),
    pytest.param("REGISTRY.Example.com/app", "registry.example.com/app", id="host-case-folded"),
    pytest.param("localhost/app", "localhost/app", id="localhost"),
    pytest.param("localhost:5000/app:dev", "localhost:5000/app", id="localhost-port"),
    pytest.param("127.0.0.1:5000/team-a/app", "127.0.0.1:5000/team-a/app", id="ip-port"),
    pytest.param("[::1]:5000/app", "[::1]:5000/app", id="ipv6"),
    pytest.param("myhost:5000/app", "myhost:5000/app", id="port-makes-host"),
    pytest.param("gcr.io/project/image:tag", "gcr.io/project/image", id="gcr"),
    pytest.param("europe-west1-docker.pkg.dev/p/repo/img", "europe-west1-docker.pkg.dev/p/repo/img",
                 id="artifact-registry"),
    pytest.param("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1",
                 "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", id="ecr"),
    pytest.param("public.ecr.aws/nginx/nginx:stable", "public.ecr.aws/nginx/nginx", id="ecr-public"),
    pytest.param("ghcr.io/acme/app@" + DIGEST, "ghcr.io/acme/app", id="ghcr-digest"),
    pytest.param("quay.io/a_b/c__d/e-f.g", "quay.io/a_b/c__d/e-f.g", id="separators"),
    pytest.param("acmecorp/my.app:1.0-rc.1", "docker.io/acmecorp/my.app", id="dot-in-path-not-host"),
]


@pytest.mark.parametrize(("reference", "expected"), NORMALIZED)
def test_normalize_image(reference: str, expected: str) -> None:
    assert normalize_image(reference) == expected


@pytest.mark.parametrize("reference", [
    pytest.param("", id="empty"),
    pytest.param("Acme/App", id="uppercase-path"),
    pytest.param("nginx:", id="empty-tag"),
    pytest.param("a b", id="space"),
    pytest.param("https://registry.example.com/app", id="scheme"),
    pytest.param("registry.example.com/", id="no-path"),
    pytest.param("a" * 64, id="bare-64-hex-identifier"),
    pytest.param("app@sha256:short", id="bad-digest"),
    pytest.param("x" * 10_000, id="very-long"),
    pytest.param("nginx\u00e9", id="unicode"),
])
def test_invalid_images_are_refused(reference: str) -> None:
    with pytest.raises(InvalidReference):
        normalize_image(reference)


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param("docker.io/acme", "docker.io/acme", id="hub-org-is-not-library"),
    pytest.param("index.docker.io/acme", "docker.io/acme", id="legacy-alias"),
    pytest.param("docker.io", "docker.io", id="all-of-hub"),
    pytest.param("Registry.Example.com:5000/team/", "registry.example.com:5000/team", id="case-and-slash"),
    pytest.param("harbor.example.com/platform/sub", "harbor.example.com/platform/sub", id="nested"),
    pytest.param("localhost:5000", "localhost:5000", id="localhost"),
])
def test_normalize_root(url: str, expected: str) -> None:
    assert normalize_root(url) == expected


@pytest.mark.parametrize(("url", "fragment"), [
    pytest.param("https://harbor.example.com", "scheme", id="scheme"),
    pytest.param("acme", "registry host", id="no-host"),
    pytest.param("harbor.example.com/Team", "invalid repository path", id="uppercase-path"),
    pytest.param("harbor.example.com/team:1", "invalid repository path", id="tag"),
    pytest.param("", "empty", id="empty"),
    pytest.param("-bad-.com/x", "invalid registry host", id="bad-host"),
])
def test_invalid_roots_say_why(url: str, fragment: str) -> None:
    with pytest.raises(InvalidReference, match=fragment):
        normalize_root(url)


# Strategies that build references from the grammar's own pieces.
# No dots: a first component with a dot is a host (tested by the table above).
_component = st.from_regex(r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+){0,2}", fullmatch=True).filter(lambda s: len(s) < 30)
_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(?:com|io|dev)", fullmatch=True),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["localhost", "registry.local", "10.0.0.1"]),
              st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(host=_host, path=_path)
def test_normalizing_twice_changes_nothing(host: str, path: str) -> None:
    once = normalize_image(f"{host}/{path}")
    assert normalize_image(once) == once


@given(path=_path, tag=_tag)
def test_tags_and_digests_never_change_the_name(path: str, tag: str) -> None:
    bare = normalize_image(path)
    assert normalize_image(f"{path}:{tag}") == bare
    assert normalize_image(f"{path}@{DIGEST}") == bare


@given(host=_host, path=_path)
def test_host_is_case_insensitive_and_kept_first(host: str, path: str) -> None:
    normalized = normalize_image(f"{host.upper()}/{path}")
    assert normalized == f"{host}/{path}"


@given(path=_path)
def test_hub_names_gain_docker_io_and_library(path: str) -> None:
    normalized = normalize_image(path)
    assert normalized == (f"docker.io/{path}" if "/" in path else f"docker.io/library/{path}")


@given(st.text(max_size=300))
def test_any_text_either_normalizes_or_raises_invalid_reference(text: str) -> None:
    try:
        result = normalize_image(text)
    except InvalidReference:
        return
    assert result == result.strip() and "/" in result and ":" not in result.split("/", 1)[1]
