"""The container image's recipe. No Docker engine runs where the tests do, so the Dockerfile is
parsed (dockerfile-parse) and the build context is worked out from .dockerignore."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.imports import import_or_skip

dockerfile_parse = import_or_skip("dockerfile_parse")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "regcred"
DOCKERFILE = ROOT / "Dockerfile"
# A slim Debian Python image pinned to a patch release and by digest.
PINNED_BASE = re.compile(r"^python:(?P<version>3\.\d+\.\d+)-slim(-[a-z]+)?@sha256:[0-9a-f]{64}$")
LOCKS = ("requirements/image.txt", "requirements/build.txt")


def _parser() -> dockerfile_parse.DockerfileParser:
    return dockerfile_parse.DockerfileParser(str(DOCKERFILE))


def _stages() -> list[list[dict]]:
    """Instructions per stage, comments dropped, ARG defaults substituted in FROM."""
    parser = _parser()
    args: dict[str, str] = {}
    stages: list[list[dict]] = []
    for instruction in parser.structure:
        name, value = instruction["instruction"], instruction["value"]
        if name == "COMMENT":
            continue
        if name == "ARG" and not stages and "=" in value:
            key, default = value.split("=", 1)
            args[key.strip()] = default.strip()
        if name == "FROM":
            value = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)
            stages.append([])
        if stages:
            stages[-1].append({"instruction": name, "value": value})
    return stages


def _all(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_multi_stage_from_one_pinned_slim_python():
    stages = _stages()
    assert len(stages) >= 2, "wheels are built in a stage of their own"
    bases = [_all(stage, "FROM")[0].split()[0] for stage in stages]
    for base in bases:
        assert PINNED_BASE.match(base), f"{base} is not a slim Python image pinned to a patch release"
    assert len(set(bases)) == 1, "build and run on the same Python"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in required.removeprefix(">=").split("."))
    version = tuple(int(p) for p in PINNED_BASE.match(bases[0]).group("version").split("."))
    assert version[: len(minimum)] >= minimum


def test_every_download_is_checked_against_the_locked_hashes():
    build, final = _stages()[0], _stages()[-1]
    downloads = [part for run in _all(build, "RUN") for part in run.split("&&")
                 if re.search(r"pip (install|wheel)", part) and "--no-deps --no-build-isolation" not in part]
    assert downloads, "the build stage fetches the locked dependencies"
    for command in downloads:
        assert "--require-hashes" in command and "--only-binary=:all:" in command, command
        assert re.search(r"-r requirements/(image|build)\.txt", command), command
    # regcred's own wheel is built with the locked tools only, nothing fetched for it.
    assert any("pip wheel --no-deps --no-build-isolation" in run for run in _all(build, "RUN"))
    installs = " ".join(_all(final, "RUN"))
    assert "--require-hashes -r /requirements/image.txt" in installs and "--no-index" in installs


def test_wheels_are_built_in_the_first_stage_and_only_installed_in_the_last():
    build, final = _stages()[0], _stages()[-1]
    assert any("pip wheel" in run for run in _all(build, "RUN"))
    runs = " ".join(_all(final, "RUN"))
    assert "pip install" in runs and "--no-index" in runs and "--no-cache-dir" in runs
    assert "pip wheel" not in runs
    # The wheels reach the final stage through a bind mount for one RUN, never a layer.
    assert "--mount=type=bind,from=build" in runs
    assert not [c for c in _all(final, "COPY") if "--from" in c]
    for tool in ("gcc", "build-essential", "make ", "apt-get install"):
        assert tool not in runs, f"{tool} in the final stage"


def test_final_stage_runs_as_a_numeric_non_root_user():
    final = _stages()[-1]
    users = _all(final, "USER")
    assert users, "no USER in the final stage: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0, f"USER {users[-1]} must be a numeric non-zero uid"
    assert not group or group.isdigit()
    names = [i["instruction"] for i in final]
    assert names.index("USER") < names.index("ENTRYPOINT")
    # The chart relies on it: runAsNonRoot is enforced from the image's numeric USER.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsNonRoot"] is True


def test_entrypoint_is_regcred_serve_in_exec_form():
    final = _stages()[-1]
    (entrypoint,) = _all(final, "ENTRYPOINT")
    assert entrypoint == '["regcred", "serve"]'
    assert _all(final, "CMD") == [], "the chart passes only flags: a CMD would be appended to them"


def test_exposed_ports_are_the_charts_defaults():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    exposed = {int(p) for e in _all(_stages()[-1], "EXPOSE") for p in e.split()}
    assert exposed == {values["webhook"]["port"], values["metrics"]["port"], values["ci"]["port"]}


# ---- the build context ----------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus **) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _context() -> set[str]:
    """Files Docker would send: the last matching pattern wins; a pattern matching a parent
    directory matches everything below it."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    included = set()
    for path in ROOT.rglob("*"):
        if not path.is_file() or ".git" in path.relative_to(ROOT).parts[:1]:
            continue
        relative = path.relative_to(ROOT).as_posix()
        parts = relative.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, rule in rules:
            if any(rule.match(candidate) for candidate in candidates):
                excluded = not negated
        if not excluded:
            included.add(relative)
    return included


def test_build_context_holds_what_the_wheel_needs_and_nothing_else():
    context = _context()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "pyproject.toml" in context
    assert project["project"]["readme"] in context
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "webhook").rglob("*.py")}
    assert sources and sources <= context
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    assert set(LOCKS) <= context
    assert not [f for f in context if not (f in ("pyproject.toml", "README.md", *LOCKS) or f.startswith("webhook/"))], \
        "tests, charts, certificates and the rest stay out of the image's build context"


@pytest.mark.parametrize("stage", [0, -1])
def test_every_copy_source_is_in_the_build_context(stage):
    context = _context()
    for copy in _all(_stages()[stage], "COPY"):
        if "--from" in copy:
            continue
        *sources, _destination = copy.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file"
            wanted = [p.relative_to(ROOT).as_posix() for p in ([path] if path.is_file() else path.rglob("*"))
                      if p.is_file() and "__pycache__" not in p.parts]
            assert set(wanted) <= context, f"COPY {source}: .dockerignore leaves some of it out"


def test_dockerfile_parses_for_the_tools_that_read_it():
    parser = _parser()
    assert parser.baseimage and PINNED_BASE.match(parser.baseimage)
    assert Path(DOCKERFILE).read_text().startswith("# syntax=docker/dockerfile:1")
