"""The CI token list: parsing and its errors, hashing, constant-time lookup, last-good-list keeping,
file watching and the ``regcred ci-token create`` command."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from webhook import filewatch
from webhook.ci.command import add_ci_token_parser, run_ci_token
from webhook.ci.tokens import (
    TOKEN_PREFIX,
    TokenList,
    create_token,
    entry_yaml,
    hash_token,
    parse_tokens,
)
from webhook.yamlload import ConfigError

HASH_A = hash_token("token-a")
HASH_B = hash_token("token-b")


def _document(*entries: dict) -> str:
    return yaml.safe_dump({"tokens": list(entries)})


def _entry(name: str = "deploy", role: str = "ArtefactContributor", sha256: str = HASH_A, **extra) -> dict:
    return {"name": name, "role": role, "sha256": sha256, **extra}


def _parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="regcred")
    add_ci_token_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_a_valid_list_parses_and_normalises_the_hash():
    tokens = parse_tokens(_document(
        _entry(sha256=HASH_A.upper()), _entry("release", "Administrator", HASH_B, registries=["harbor", "ecr-main"]),
    )).tokens
    assert [t.name for t in tokens] == ["deploy", "release"]
    assert tokens[0].sha256 == HASH_A and tokens[0].registries is None and tokens[0].may_fetch
    assert tokens[1].registries == ("harbor", "ecr-main")
    assert tokens[1].allows("harbor") and not tokens[1].allows("other")


@pytest.mark.parametrize("text", ["", "tokens: []\n", "{}\n"])
def test_an_empty_list_is_valid_and_accepts_no_token(text):
    assert parse_tokens(text).tokens == ()


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("tokens: [unclosed", "not valid YAML at line 1", id="bad-yaml"),
    pytest.param(_document(_entry()) + _document(_entry("other", sha256=HASH_B)),
                 "not valid YAML at line 5: duplicate key 'tokens' (first at line 1)", id="duplicate-list"),
    pytest.param("- a\n", "top level must be a mapping with a 'tokens' list", id="not-a-mapping"),
    pytest.param(_document(_entry(sha256="regcred_" + "x" * 43)),
                 "tokens[0].sha256: must be the 64 hex digits of the token's SHA-256 (not the token)",
                 id="token-as-hash"),
    pytest.param(_document(_entry(name="has space")), "tokens[0].name: must be 1-64 letters", id="bad-name"),
    pytest.param(_document(_entry(role="Admin istrator")), "tokens[0].role: must be a role name", id="bad-role"),
    pytest.param(_document(_entry(registries=[])), "tokens[0].registries: must not be empty", id="empty-scope"),
    pytest.param(_document(_entry(registries=["Harbor"])), "tokens[0].registries: not registry ids: 'Harbor'",
                 id="bad-scope-id"),
    pytest.param(_document(_entry(owner="me")), "tokens[0].owner: unknown key", id="unknown-key"),
    pytest.param(_document(_entry(), _entry(sha256=HASH_B)), "tokens[1].name: duplicate of tokens[0]", id="dup-name"),
    pytest.param(_document(_entry(), _entry("other")), "tokens[1].sha256: duplicate of tokens[0]", id="dup-hash"),
    pytest.param("tokens:\n  - name: x\n", "tokens[0].role: Field required", id="missing-fields"),
])
def test_errors_name_the_entry_and_field(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_tokens(text)
    assert any(error.startswith(expected) for error in caught.value.errors), caught.value.errors


def test_a_pasted_token_is_never_echoed_in_errors():
    token, _ = create_token("deploy")
    with pytest.raises(ConfigError) as caught:
        parse_tokens(_document(_entry(sha256=token)))
    assert token not in str(caught.value)


def test_find_matches_by_hash_and_only_by_hash():
    token_list = TokenList()
    assert token_list.find("token-a") is None  # nothing loaded yet: nobody gets in
    assert token_list.apply_text(_document(_entry(), _entry("release", sha256=HASH_B)), "test")
    assert token_list.find("token-a").name == "deploy"
    assert token_list.find("token-b").name == "release"
    assert token_list.find(HASH_A) is None  # the stored hash is not a credential
    assert token_list.find("token-c") is None


@given(st.text(min_size=1, max_size=80))
def test_no_other_string_matches_a_created_token(candidate):
    token_list = TokenList()
    token, entry = create_token("deploy")
    token_list.apply_text(entry_yaml(entry).replace("- ", "tokens:\n- ", 1), "test")
    assert token_list.find(token) == entry
    assert (token_list.find(candidate) is None) == (candidate != token)


def test_a_broken_list_keeps_the_last_good_one(caplog):
    token_list = TokenList()
    assert not token_list.apply_text("tokens: [", "first")
    assert not token_list.ready and token_list.errors
    assert token_list.apply_text(_document(_entry()), "second")
    with caplog.at_level(logging.ERROR, logger="webhook.ci.tokens"):
        assert not token_list.apply_text(_document(_entry(sha256="nope")), "third")
    assert token_list.find("token-a").name == "deploy" and token_list.ready
    assert token_list.errors == ["tokens[0].sha256: must be the 64 hex digits of the token's SHA-256 (not the token)"]
    assert "keeping the last good list" in caplog.records[-1].getMessage()


def test_an_unreadable_file_keeps_the_last_good_one(tmp_path):
    token_list = TokenList()
    path = tmp_path / "tokens.yaml"
    path.write_text(_document(_entry()))
    assert token_list.apply_file(path)
    path.unlink()
    assert not token_list.apply_file(path)
    assert token_list.errors[0].startswith(f"cannot read {path}")
    assert token_list.find("token-a") is not None


def test_a_missing_source_is_reported_and_keeps_the_last_good_one():
    token_list = TokenList()
    assert token_list.apply_text(_document(_entry()), "secret regcred/ci-tokens")
    assert not token_list.apply_error("Secret regcred/ci-tokens has no key tokens.yaml", "secret regcred/ci-tokens")
    assert token_list.errors == ["Secret regcred/ci-tokens has no key tokens.yaml"]
    assert token_list.find("token-a") is not None


def test_roles_that_cannot_fetch_are_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="webhook.ci.tokens"):
        TokenList().apply_text(_document(_entry(role="ArtifactContributor")), "test")
    assert caplog.records[-1].names == ["deploy"]


def test_created_tokens_are_256_bit_random_and_hash_to_their_entry():
    token, entry = create_token("deploy", "Administrator", ["harbor"])
    assert token.startswith(TOKEN_PREFIX)
    raw = base64.urlsafe_b64decode(token.removeprefix(TOKEN_PREFIX) + "=")
    assert len(raw) >= 32
    assert entry.sha256 == hash_token(token) and entry.role == "Administrator" and entry.registries == ("harbor",)
    assert create_token("deploy")[0] != token


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param(["--name", "deploy"], {"name": "deploy", "role": "ArtefactContributor"}, id="defaults"),
    pytest.param(["--name", "rel", "--role", "Administrator", "--registries", "harbor, ecr-main,"],
                 {"name": "rel", "role": "Administrator", "registries": ["harbor", "ecr-main"]}, id="scoped-admin"),
])
def test_cli_prints_the_token_once_then_the_entry(capsys, argv, expected):
    assert run_ci_token(_parse_cli(["ci-token", "create", *argv])) == 0
    out = capsys.readouterr()
    token, _, entry_text = out.out.partition("\n")
    [entry] = yaml.safe_load(entry_text)
    assert entry == {**expected, "sha256": hash_token(token)}
    assert out.out.count(token) == 1 and token not in out.err


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param(["--name=-bad-"], "name: must be 1-64 letters", id="bad-name"),
    pytest.param(["--name", "ok", "--registries", ","], "registries: must not be empty", id="empty-scope"),
    pytest.param(["--name", "ok", "--role", "no such"], "role: must be a role name", id="bad-role"),
])
def test_cli_rejects_bad_arguments_without_printing_a_token(capsys, argv, expected):
    assert run_ci_token(_parse_cli(["ci-token", "create", *argv])) == 2
    out = capsys.readouterr()
    assert out.out == "" and expected in out.err


def test_a_watched_file_applies_changes_and_survives_going_missing(tmp_path):
    path = tmp_path / "tokens.yaml"
    token_list = TokenList()

    async def scenario() -> None:
        path.write_text(_document(_entry()))
        task = asyncio.create_task(filewatch.watch([path], lambda: token_list.apply_file(path), interval=0.01,
                                                   call_now=True))
        await _until(lambda: token_list.find("token-a") is not None)
        replacement = tmp_path / "next.yaml"
        replacement.write_text(_document(_entry("release", sha256=HASH_B)))
        os.replace(replacement, path)  # how a projected Secret changes: a new file, atomically
        await _until(lambda: token_list.find("token-b") is not None)
        assert token_list.find("token-a") is None
        path.unlink()
        await _until(lambda: bool(token_list.errors))
        assert token_list.find("token-b") is not None
        task.cancel()

    asyncio.run(scenario())


async def _until(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_entry_yaml_round_trips(tmp_path: Path):
    _, entry = create_token("deploy", registries=["harbor"])
    assert parse_tokens("tokens:\n" + entry_yaml(entry)).tokens == (entry,)


CREATE_OUTPUT = "regcred_" + "Q" * 43 + "\n" + yaml.safe_dump([_entry()], sort_keys=False)


@pytest.mark.parametrize(("content", "code", "expected"), [
    pytest.param(_document(_entry(), _entry("viewer", "Reader", HASH_B)), 0,
                 ["OK (2 tokens)", "tokens.yaml: warning: viewer: role 'Reader' cannot fetch credentials"], id="valid"),
    pytest.param(CREATE_OUTPUT, 1, ["tokens.yaml: line 1: a token itself, which must not be stored here"],
                 id="create-output-with-token"),
    pytest.param(CREATE_OUTPUT.partition("\n")[2], 1,
                 ["tokens.yaml: top level must be a mapping with a 'tokens' list (put the entries ci-token create "
                  "prints under tokens:)"], id="entry-without-tokens-key"),
    pytest.param(_document(_entry(role="no such"), _entry(name="-x-", sha256=HASH_B)), 1,
                 ["tokens.yaml: tokens[0].role: must be a role name", "tokens.yaml: tokens[1].name: must be 1-64"],
                 id="every-problem-one-per-line"),
    pytest.param(None, 2, ["tokens.yaml: cannot read: No such file or directory"], id="missing-file"),
])
def test_check_validates_a_tokens_file_offline(tmp_path, monkeypatch, capsys, content, code, expected):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        Path("tokens.yaml").write_text(content)
    assert run_ci_token(_parse_cli(["ci-token", "check", "tokens.yaml"])) == code
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    assert len(lines) == len(expected)
    for line, fragment in zip(sorted(lines, key=lambda text: not text.startswith("OK")), expected, strict=True):
        assert line.startswith(fragment)
    assert "Q" * 43 not in out.out + out.err
    if content is not None:  # the same verdict as the server's list
        assert TokenList().apply_text(content, "tokens.yaml") is (code == 0)


def test_ci_token_without_a_command_prints_its_usage(capsys):
    assert run_ci_token(_parse_cli(["ci-token"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: regcred ci-token") and "create" in err and "check FILE" in err
