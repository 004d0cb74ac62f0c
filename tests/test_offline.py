"""``regcred check-config`` and ``regcred match`` as a user runs them: output, messages, exit codes."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.__main__ import build_parser, main

LIST = """registries:
- {id: hub, url: docker.io/acme, type: basic, secretRef: s}
- {id: prod, url: registry.example.com/prod, type: basic, secretRef: s-prod, namespaces: [team-*]}
- id: tier
  url: registry.example.com/tier
  type: basic
  secretRef: s-tier
  namespaceSelector: {matchLabels: {tier: production}}
"""
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "registries.yaml"
    path.write_text(LIST)
    return path


def run(capsys, *argv: str) -> tuple[int, list[list[str]], str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own errors and --version
        code = exit_.code
    out = capsys.readouterr()
    return code, [line.split("  ") for line in out.out.splitlines()], out.err


def cells(row: list[str]) -> list[str]:
    return [cell.strip() for cell in row if cell.strip()]


@pytest.mark.parametrize(("argv", "code", "granted"), [
    pytest.param(["--namespace", "team-a", "registry.example.com/tier/x"], 0,
                 "yes (selector not evaluated: pass --namespace-labels)", id="selector-without-labels"),
    pytest.param(["--namespace", "team-a", "--namespace-labels", "tier=production", "registry.example.com/tier/x"],
                 0, "yes", id="selector-matches"),
    pytest.param(["--namespace", "team-a", "--namespace-labels", "tier=dev", "registry.example.com/tier/x"], 0,
                 "no: the namespace labels do not match namespaceSelector", id="selector-refuses"),
    pytest.param(["--namespace", "sandbox", "registry.example.com/prod/x"], 0,
                 "no: sandbox is not in namespaces ['team-*']", id="list-refuses"),
    pytest.param(["--namespace", "team-a", "registry.example.com/prod/x"], 0, "yes", id="list-grants"),
    pytest.param(["--namespace", "team-a", "nginx"], 0, "-", id="no-registry"),
])
def test_match_says_whether_a_namespace_is_granted(capsys, config, argv, code, granted) -> None:
    got, rows, err = run(capsys, "match", "--config", str(config), *argv)
    assert (got, err) == (code, "")
    assert cells(rows[0]) == ["IMAGE", "NORMALIZED", "REGISTRY", "GRANTED"]
    assert cells(rows[1])[-1] == granted


def test_match_shows_the_parsers_whole_reason_and_exits_1(capsys, config) -> None:
    code, rows, _ = run(capsys, "match", "--config", str(config), "Acme/Web", "acme/web", "a b")
    assert code == 1
    assert [cells(row) for row in rows[1:]] == [
        ["Acme/Web", "invalid image reference: repository name (Web) must be lowercase", "-"],
        ["acme/web", "docker.io/acme/web", "hub"],
        ["a b", "invalid image reference", "-"],
    ]


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["--namespace-labels", "tier=production"], "--namespace-labels needs --namespace",
                 id="labels-without-namespace"),
    pytest.param(["--namespace", "x", "--namespace-labels", "tier"], "regcred match: --namespace-labels: "
                 "'tier' is not a k=v pair", id="not-a-pair"),
    pytest.param(["--namespace", "x", "--namespace-labels", "Bad!=x"], "regcred match: --namespace-labels: "
                 "'Bad!' is not a valid label key", id="bad-key"),
    pytest.param(["--namespace", "x", "--namespace-labels", "tier=-x-"], "regcred match: --namespace-labels: "
                 "'-x-' is not a valid label value", id="bad-value"),
])
def test_a_bad_label_flag_blames_the_flag(capsys, config, argv, message) -> None:
    code, rows, err = run(capsys, "match", "--config", str(config), *argv, "nginx")
    assert (code, rows) == (2, []) and message in err and "registries.yaml" not in err


BROKEN = "registries:\n- {id: X, url: 'https://x.io', type: basic, secretRef: s}\n"


@pytest.mark.parametrize(("command", "content", "code", "lines"), [
    pytest.param("check-config", LIST, 0, [], id="check-valid"),
    pytest.param("check-config", BROKEN, 1, ["registries[0].id: must be 2-50", "registries[0].url: must not contain "
                 "a scheme (write registry.example.com/team, not https://...)"], id="check-every-error-a-line"),
    pytest.param("check-config", None, 2, ["cannot read: No such file or directory"], id="check-missing"),
    pytest.param("match", BROKEN, 2, ["registries[0].id: must be 2-50", "registries[0].url: must not contain"],
                 id="match-every-error-a-line"),
    pytest.param("match", "registries:\n- id: a\n   url: b\n", 2, ["not valid YAML at line 3"], id="match-bad-yaml"),
])
def test_config_errors_print_one_per_line_naming_the_file(tmp_path, capsys, command, content, code, lines) -> None:
    path = tmp_path / "registries.yaml"
    if content is not None:
        path.write_text(content)
    argv = ["check-config", str(path)] if command == "check-config" else ["match", "--config", str(path), "nginx"]
    got, _, err = run(capsys, *argv)
    assert got == code
    assert len(err.splitlines()) == len(lines)
    for line, fragment in zip(err.splitlines(), lines, strict=True):
        assert line.startswith(f"{path}: ") and fragment in line


def test_version(capsys) -> None:
    code, rows, _ = run(capsys, "--version")
    assert code == 0 and cells(rows[0])[0].startswith("regcred ")


@pytest.mark.parametrize("command", [["serve"], ["check-config"], ["match"], ["ci-token", "create"],
                                     ["ci-token", "check"]], ids=" ".join)
def test_every_flag_and_argument_has_help(capsys, command) -> None:
    assert run(capsys, *command, "--help")[0] == 0
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    for action in parser._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
        if action.option_strings and action.dest != "help" and action.required is False:
            assert "default" in action.help, f"{action.option_strings} does not show its default"


def test_serve_help_names_environment_variables_that_are_read() -> None:
    help_text = subprocess.run([sys.executable, "-m", "webhook", "serve", "--help"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout
    named = sorted(set(re.findall(r"REGCRED_[A-Z_]+", help_text)) - {"REGCRED_"})
    assert len(named) >= 19
    bad = {**os.environ, **{name: "not-a-number" for name in named if name.endswith(("PORT", "QPS", "BURST"))}}
    refused = subprocess.run([sys.executable, "-m", "webhook", "serve"], capture_output=True, text=True, cwd=ROOT,
                             env=bad, timeout=30)
    assert refused.returncode == 2 and "invalid" in refused.stderr and "Traceback" not in refused.stderr
