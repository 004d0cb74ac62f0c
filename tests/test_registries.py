"""The registry list contract: validation messages and longest-prefix matching."""

from __future__ import annotations

import re
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.registries import Matcher, parse_registries
from webhook.yamlload import ConfigError


def _yaml(*entries: str) -> str:
    return "registries:\n" + "".join(textwrap.indent(textwrap.dedent(e).strip(), "  ") + "\n" for e in entries)


# The one documented error format: the entry, then the field's path, then the message.
FIELD_PATH = re.compile(r"^registries\[\d+\](\.[A-Za-z]+(\[\d+\])?)+: \S")

GOOD = """
- id: dockerhub-acme
  url: docker.io/acme
  type: basic
  secretRef: dockerhub-acme
"""


def test_a_valid_list_parses_with_defaults() -> None:
    registries = parse_registries(_yaml(GOOD, """
        - id: ecr-prod
          url: 123456789012.dkr.ecr.eu-west-1.amazonaws.com
          type: ecr
          ecr: {roleArn: "arn:aws:iam::123456789012:role/pull", externalId: x}
        """, """
        - id: gar
          url: europe-west1-docker.pkg.dev/project/repo
          type: gcr
          secretRef: gar-key
          exposeToCI: true
          gcr: {mode: jsonKey}
        """))
    hub, ecr, gar = registries.registries
    assert (hub.id, hub.url, hub.expose_to_ci, hub.secret_name) == (
        "dockerhub-acme", "docker.io/acme", False, "regcred-dockerhub-acme")
    assert (ecr.aws_region, ecr.ecr.role_arn) == ("eu-west-1", "arn:aws:iam::123456789012:role/pull")
    assert (gar.expose_to_ci, gar.gcr.mode) == (True, "jsonKey")


@pytest.mark.parametrize(("document", "expected"), [
    pytest.param(_yaml(GOOD.replace("dockerhub-acme\n  url", "Bad_ID\n  url")), "registries[0].id: must be 2-50",
                 id="bad-id"),
    pytest.param(_yaml(GOOD.replace("id: dockerhub-acme", "id: a")), "registries[0].id", id="id-too-short"),
    pytest.param(_yaml(GOOD.replace("id: dockerhub-acme", "id: " + "a" * 51)), "registries[0].id", id="id-too-long"),
    pytest.param(_yaml(GOOD.replace("id: dockerhub-acme", "id: acme-")), "registries[0].id", id="id-trailing-dash"),
    pytest.param(_yaml(GOOD.replace("docker.io/acme", "https://docker.io/acme")),
                 "registries[0].url: must not contain a scheme", id="scheme"),
    pytest.param(_yaml(GOOD.replace("type: basic", "type: quay")), "registries[0].type: must be one of",
                 id="bad-type"),
    pytest.param(_yaml(GOOD + "  colour: blue\n"), "registries[0].colour: unknown key", id="unknown-key"),
    pytest.param(_yaml(GOOD.replace("  secretRef: dockerhub-acme\n", "")),
                 "registries[0].secretRef: required for type basic", id="basic-needs-secretref"),
    pytest.param(_yaml(GOOD, GOOD.replace("url: docker.io/acme", "url: docker.io/other")),
                 "registries[1].id: duplicate of registries[0]", id="duplicate-id"),
    pytest.param(_yaml(GOOD, GOOD.replace("dockerhub-acme", "hub2").replace("docker.io/acme", "index.docker.io/acme/")),
                 "registries[1].url: docker.io/acme duplicates registries[0]", id="duplicate-normalized-url"),
    pytest.param(_yaml(GOOD, "- id: ecr\n  url: registry.example.com\n  type: ecr"),
                 "registries[1].url: type ecr needs an ECR host", id="ecr-wrong-host"),
    pytest.param(_yaml("- id: gcr\n  url: registry.example.com\n  type: gcr"),
                 "registries[0].url: type gcr needs", id="gcr-wrong-host"),
    pytest.param(_yaml("- id: ecr\n  url: 123456789012.dkr.ecr.eu-west-1.amazonaws.com\n"
                       "  type: ecr\n  ecr: {roleArn: nope}"),
                 "registries[0].ecr.roleArn: must be an IAM role ARN", id="bad-role-arn"),
    pytest.param(_yaml("- id: gar\n  url: gcr.io/p\n  type: gcr\n  gcr: {mode: jsonKey}"),
                 "registries[0].secretRef: required with gcr.mode jsonKey", id="jsonkey-needs-secretref"),
    pytest.param(_yaml(GOOD.replace("type: basic", "type: basic\n  ecr: {}")),
                 "registries[0].ecr: only allowed with type ecr", id="ecr-options-on-basic"),
    pytest.param(_yaml(GOOD.replace("secretRef: dockerhub-acme", "secretRef: Not_A_Name")),
                 "registries[0].secretRef: must be a valid Kubernetes Secret name", id="bad-secret-name"),
    pytest.param("registries: [\n", "not valid YAML at line", id="broken-yaml"),
    pytest.param(_yaml(GOOD) + _yaml(GOOD.replace("acme", "other")),
                 "not valid YAML at line 6: duplicate key 'registries' (first at line 1)", id="duplicate-list"),
    pytest.param(_yaml(GOOD + "  url: docker.io/other\n"),
                 "not valid YAML at line 6: duplicate key 'url' (first at line 3)", id="duplicate-field"),
    pytest.param(_yaml(GOOD.replace("  type: basic", " type: basic")),
                 "not valid YAML at line 4: expected <block end>, but found '<block mapping start>' (check this "
                 "line's indentation", id="bad-indentation"),
    pytest.param("- a\n- b\n", "top level must be a mapping", id="top-level-list"),
    pytest.param("registries: {}\n", "registries: Input should be a valid list", id="registries-not-list"),
    pytest.param("registries: []\nextra: 1\n", "extra: unknown key", id="unknown-top-level-key"),
])
def test_errors_name_the_entry_and_field(document: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_registries(document)
    assert any(error.startswith(expected) for error in caught.value.errors), caught.value.errors
    if expected.startswith("registries["):
        assert all(FIELD_PATH.match(error) for error in caught.value.errors), caught.value.errors


@pytest.mark.parametrize(("host", "region"), [
    pytest.param("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1", id="standard"),
    pytest.param("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1", id="fips"),
    pytest.param("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", id="china"),
    pytest.param("123456789012.dkr-ecr.ap-south-1.on.aws", "ap-south-1", id="dual-stack"),
    pytest.param("public.ecr.aws", "us-east-1", id="public"),
])
def test_ecr_region_comes_from_the_host(host: str, region: str) -> None:
    registry = parse_registries(_yaml(f"- id: ecr\n  url: {host}\n  type: ecr")).registries[0]
    assert registry.aws_region == region


def test_empty_document_is_an_empty_list() -> None:
    assert parse_registries("").registries == []


MATCH_LIST = _yaml(
    "- {id: hub-acme, url: docker.io/acme, type: basic, secretRef: s}",
    "- {id: hub-acme-team, url: docker.io/acme/team, type: basic, secretRef: s}",
    "- {id: hub-official, url: docker.io/library, type: basic, secretRef: s}",
    "- {id: team, url: registry.example.com/team, type: basic, secretRef: s}",
    "- {id: whole-host, url: registry.example.com, type: basic, secretRef: s}",
    "- {id: port-5000, url: registry.example.com:5000, type: basic, secretRef: s}",
    "- {id: local, url: localhost:5000/dev, type: basic, secretRef: s}",
)


@pytest.mark.parametrize(("image", "registry_id"), [
    pytest.param("registry.example.com/team/app", "team", id="prefix"),
    pytest.param("registry.example.com/team", "team", id="exact-root"),
    pytest.param("registry.example.com/teamx/app", "whole-host", id="segment-boundary"),
    pytest.param("registry.example.com/team/sub/app:1", "team", id="deeper-path"),
    pytest.param("REGISTRY.example.COM/team/app", "team", id="host-case"),
    pytest.param("registry.example.com:5000/team/app", "port-5000", id="port-is-part-of-host"),
    pytest.param("registry.example.com:5001/team/app", None, id="other-port-no-match"),
    pytest.param("acme/app", "hub-acme", id="hub-short-name"),
    pytest.param("index.docker.io/acme/app", "hub-acme", id="hub-legacy-alias"),
    pytest.param("docker.io/acme/team/app", "hub-acme-team", id="longest-wins"),
    pytest.param("acme/teams/app", "hub-acme", id="longest-respects-segments"),
    pytest.param("nginx", "hub-official", id="official-image"),
    pytest.param("acmex/app", None, id="hub-sibling-org"),
    pytest.param("localhost:5000/dev/app", "local", id="localhost"),
    pytest.param("ghcr.io/acme/app", None, id="unlisted-host"),
])
def test_longest_prefix_on_segment_boundaries(image: str, registry_id: str | None) -> None:
    found = Matcher(parse_registries(MATCH_LIST)).match(image)
    assert (found.registry.id if found.registry else None) == registry_id


def test_an_invalid_image_matches_nothing_and_says_why() -> None:
    found = Matcher(parse_registries(MATCH_LIST)).match("Bad Image")
    assert (found.registry, found.normalized) == (None, None) and "invalid" in found.error


_segment = st.sampled_from(["a", "ab", "b", "team", "team-a", "x"])
_roots = st.lists(st.lists(_segment, min_size=0, max_size=3), min_size=1, max_size=6, unique_by=tuple)


@given(roots=_roots, image_path=st.lists(_segment, min_size=1, max_size=5))
def test_matcher_agrees_with_a_brute_force_oracle(roots: list[list[str]], image_path: list[str]) -> None:
    urls = ["registry.example.com" + "".join("/" + s for s in root) for root in roots]
    document = _yaml(*(f"- {{id: r{i}, url: {url}, type: basic, secretRef: s}}" for i, url in enumerate(urls)))
    image = "registry.example.com/" + "/".join(image_path)
    covering = [u for u in urls if image == u or image.startswith(u + "/")]
    expected = max(covering, key=len) if covering else None
    found = Matcher(parse_registries(document)).match(image)
    assert (found.registry.url if found.registry else None) == expected


def test_remembered_answers_stay_right_through_image_churn() -> None:
    # More distinct images than the Matcher remembers: answers must not depend on its memory.
    matcher = Matcher(parse_registries(MATCH_LIST))
    first = matcher.match("Bad Image")
    for round_ in range(2):
        for index in range(5000):
            found = matcher.match(f"registry.example.com/team/app-{index}:{round_}")
            assert found.normalized == f"registry.example.com/team/app-{index}"
            assert found.registry is not None and found.registry.id == "team"
    assert matcher.match("Bad Image") == first and first.registry is None
