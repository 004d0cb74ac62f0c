"""Tests of the private-registry fixture, and what they teach about auth-file keys.

One real ``docker-registry`` (htpasswd + TLS) holds ``team-a/app:1`` and ``team-ab/app:1``;
``skopeo inspect`` (containers/image, the library CRI-O and podman pull with) is given one auth
file per case. The cases pin down how containers/image picks credentials out of the
``auths`` map that regcred writes into ``kubernetes.io/dockerconfigjson`` Secrets.

Note that kubelet, not the runtime, picks the credential for ``imagePullSecrets`` and matches
key paths as plain string prefixes, so kubelet would offer a ``HOST/team-a`` key to
``HOST/team-ab/app`` where containers/image does not (see ``path-key-not-offered-to-team-ab``).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.registry import (
    PrivateRegistry,
    RegistryStartError,
    authfile_entry,
    skopeo_inspect,
    tools_available,
    write_authfile,
)

pytestmark = pytest.mark.system

USERNAME = "alice"
# A colon in the password: "auth" is split at the first colon only, so this must still work.
PASSWORD = "s3cret:with-colon"
REPOS = ("team-a/app", "team-ab/app")


def _entry(kind: str) -> dict[str, str]:
    """Auth-file values by kind; the odd kinds show which fields containers/image reads."""
    valid = authfile_entry(USERNAME, PASSWORD)
    wrong = authfile_entry(USERNAME, "wrong-password")
    return {
        "valid": valid,
        "wrong-password": wrong,
        "auth-only": authfile_entry(USERNAME, PASSWORD, auth_only=True),
        "fields-only": {"username": USERNAME, "password": PASSWORD},
        "fields-wrong-auth-right": {**wrong, "auth": valid["auth"]},
        "fields-right-auth-wrong": {**valid, "auth": wrong["auth"]},
    }[kind]


def _require_tools() -> None:
    """Skip on a developer machine without the tools; CI installs them, so fail there."""
    missing = tools_available()
    if missing:
        message = (f"missing tools: {', '.join(missing)}"
                   " (apt-get install docker-registry skopeo apache2-utils)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    _require_tools()
    with PrivateRegistry.start(tmp_path_factory.mktemp("registry"), USERNAME, PASSWORD) as started:
        for repo in REPOS:
            started.push(repo)
        yield started


def _inspect(registry: PrivateRegistry, tmp_path, auths: dict[str, str], repo: str):
    authfile = write_authfile(
        tmp_path / "auth.json",
        {key.format(host=registry.host): _entry(kind) for key, kind in auths.items()},
    )
    return skopeo_inspect(registry.image(repo), authfile, registry.cert_dir)


def _assert_pulled(result: subprocess.CompletedProcess[str], registry: PrivateRegistry,
                   repo: str) -> None:
    assert result.returncode == 0, result.stderr
    inspected = json.loads(result.stdout)
    assert inspected["Name"] == f"{registry.host}/{repo}"
    assert inspected["RepoTags"] == ["1"]


def _assert_refused(result: subprocess.CompletedProcess[str]) -> None:
    # "unauthorized" rules out the failures that would make a refusal test pass for the wrong
    # reason: TLS errors, connection errors, a missing image.
    assert result.returncode != 0
    assert "unauthorized: authentication required" in result.stderr, result.stderr


TEAM_A, TEAM_AB = REPOS


@pytest.mark.parametrize(
    ("auths", "repo", "pulls"),
    [
        # Question 2: a bare host:port key serves every repository; a wrong password is refused.
        pytest.param({"{host}": "valid"}, TEAM_A, True, id="host-key-team-a"),
        pytest.param({"{host}": "valid"}, TEAM_AB, True, id="host-key-team-ab"),
        pytest.param({"{host}": "wrong-password"}, TEAM_A, False, id="wrong-password-team-a"),
        pytest.param({"{host}": "wrong-password"}, TEAM_AB, False, id="wrong-password-team-ab"),
        pytest.param({}, TEAM_A, False, id="no-entry-is-anonymous"),
        pytest.param({"127.0.0.1": "valid"}, TEAM_A, False, id="key-without-port-not-offered"),
        # Question 3: only "auth" is read; "username"/"password" are ignored entirely.
        pytest.param({"{host}": "auth-only"}, TEAM_A, True, id="auth-field-only"),
        pytest.param({"{host}": "fields-only"}, TEAM_A, False, id="fields-without-auth-ignored"),
        pytest.param({"{host}": "fields-wrong-auth-right"}, TEAM_A, True, id="auth-beats-fields"),
        pytest.param({"{host}": "fields-right-auth-wrong"}, TEAM_A, False, id="fields-never-used"),
        # Question 4: path-scoped keys match whole path segments, most specific key first.
        pytest.param({"{host}/team-a": "valid"}, TEAM_A, True, id="path-key-team-a"),
        pytest.param({"{host}/team-a/app": "valid"}, TEAM_A, True, id="path-key-whole-repo"),
        pytest.param(
            {"{host}/team-a": "valid"}, TEAM_AB, False, id="path-key-not-offered-to-team-ab",
        ),
        pytest.param(
            {"{host}/team-a": "wrong-password", "{host}": "valid"}, TEAM_A, False,
            id="most-specific-key-wins-without-fallback",
        ),
        pytest.param(
            {"{host}/team-a": "wrong-password", "{host}": "valid"}, TEAM_AB, True,
            id="host-key-serves-other-paths",
        ),
        # Docker-style URL keys are accepted, but containers/image cuts them to the host, so a
        # path in a URL key is silently dropped and the credential is offered to every repo.
        pytest.param({"https://{host}": "valid"}, TEAM_A, True, id="url-key"),
        pytest.param({"https://{host}/team-a": "valid"}, TEAM_AB, True, id="url-key-path-ignored"),
    ],
)
def test_skopeo_picks_credentials_by_key(registry, tmp_path, auths, repo, pulls):
    result = _inspect(registry, tmp_path, auths, repo)

    if pulls:
        _assert_pulled(result, registry, repo)
    else:
        _assert_refused(result)


def test_inspect_ignores_credentials_outside_the_authfile(registry, tmp_path, monkeypatch):
    # A developer's own logins must not make a refusal test pass: put valid credentials where
    # containers/image would fall back to and check that skopeo_inspect does not see them.
    home_auth = write_authfile(tmp_path / "home-auth.json", {registry.host: _entry("valid")})
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    write_authfile(docker_config / "config.json", {registry.host: _entry("valid")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(home_auth))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))

    result = _inspect(registry, tmp_path, {}, "team-a/app")

    _assert_refused(result)


def test_push_returns_the_pushed_reference(registry):
    assert registry.push("team-c/app", tag="2") == f"{registry.host}/team-c/app:2"


def test_start_failure_raises_with_registry_output(tmp_path):
    _require_tools()

    broken = {"storage": {"nosuchdriver": {}}}

    with pytest.raises(RegistryStartError, match="StorageDriver not registered: nosuchdriver"):
        PrivateRegistry.start(tmp_path, USERNAME, PASSWORD, config_overrides=broken)
