"""The image's hash-locked requirements (requirements/) still describe pyproject.toml.

Regenerating needs PyPI; these checks do not: every dependency pyproject.toml declares is
pinned at a version its specifier allows, every pin carries hashes (pip --require-hashes
refuses the whole file otherwise), and build.in is the [build-system] requirement list.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of a pip-compile/uv requirements file."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text())  # join continuation lines
    pins = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --")
        requirement = Requirement(spec)
        (pin,) = requirement.specifier
        assert pin.operator == "==", f"{path.name}: {spec} is not pinned exactly"
        hashes = [option.removeprefix("hash=") for option in options if option.startswith("hash=")]
        pins[canonicalize_name(requirement.name)] = (pin.version, hashes)
    return pins


@pytest.mark.parametrize(("lock", "declared"), [
    pytest.param("image.txt", PYPROJECT["project"]["dependencies"], id="runtime"),
    pytest.param("build.txt", PYPROJECT["build-system"]["requires"], id="build"),
])
def test_every_declared_dependency_is_pinned_within_its_specifier(lock, declared):
    pins = locked(ROOT / "requirements" / lock)
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not locked in {lock}"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"{lock} pins {name}=={pins[name][0]}, outside {requirement.specifier}: regenerate it"


@pytest.mark.parametrize("lock", ["image.txt", "build.txt"])
def test_every_pin_carries_sha256_hashes(lock):
    pins = locked(ROOT / "requirements" / lock)
    assert pins
    for name, (_version, hashes) in pins.items():
        assert hashes, f"{name} in {lock} has no hash: pip --require-hashes would refuse the file"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", value) for value in hashes), name


def test_build_in_is_the_build_system_requirement_list():
    lines = [line.strip() for line in (ROOT / "requirements" / "build.in").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == PYPROJECT["build-system"]["requires"]
