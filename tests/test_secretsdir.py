"""Local credentials (--secrets-dir): what start-up says is missing, naming each path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from webhook.composition import default_dependencies
from webhook.secretsdir import missing_material
from webhook.server import load_configuration
from webhook.settings import Settings

LIST = """registries:
- {id: hub, url: docker.io/acme, type: basic, secretRef: hub-creds}
- {id: harbor, url: harbor.example.com, type: basic, secretRef: harbor-creds}
- {id: ecr, url: 123456789012.dkr.ecr.eu-west-1.amazonaws.com, type: ecr}
"""


@pytest.mark.parametrize(("layout", "expected"), [
    pytest.param(None, ["no --secrets-dir: the credentials of secretRef harbor-creds cannot be read",
                        "no --secrets-dir: the credentials of secretRef hub-creds cannot be read"], id="no-flag"),
    pytest.param([], ["--secrets-dir {root} is not a directory"], id="directory-missing"),
    pytest.param(["creds/"], ["--secrets-dir has no folder {root}/harbor-creds for secretRef harbor-creds",
                              "--secrets-dir has no folder {root}/hub-creds for secretRef hub-creds"], id="empty"),
    pytest.param(["creds/hub-creds/"], ["--secrets-dir has no folder {root}/harbor-creds for secretRef harbor-creds"],
                 id="one-missing"),
    pytest.param(["creds/hub-creds/", "creds/harbor-creds/"], [], id="complete"),
    pytest.param(["creds/hub-creds/", "creds/harbor-creds"], ["--secrets-dir has no folder {root}/harbor-creds"],
                 id="a-file-is-no-folder"),
])
def test_start_up_names_every_missing_path(tmp_path: Path, caplog, layout, expected) -> None:
    root = None if layout is None else tmp_path / "creds"
    for entry in layout or []:
        (tmp_path / entry).mkdir(parents=True) if entry.endswith("/") else (tmp_path / entry).write_text("")
    config = tmp_path / "registries.yaml"
    config.write_text(LIST)
    settings = Settings(config=config, secrets_dir=root)
    with caplog.at_level(logging.WARNING, logger="webhook.server"):
        load_configuration(settings, default_dependencies(settings))
    logged = [r.getMessage() for r in caplog.records if r.name == "webhook.server"]
    assert len(logged) == len(expected)
    for line, fragment in zip(logged, expected, strict=True):
        assert fragment.format(root=root) in line


def test_a_cluster_run_reads_secrets_not_folders(tmp_path: Path, caplog) -> None:
    config = tmp_path / "registries.yaml"
    config.write_text(LIST)
    settings = Settings(config=config, kubeconfig=tmp_path / "kubeconfig")
    with caplog.at_level(logging.WARNING, logger="webhook.server"):
        load_configuration(settings, default_dependencies(settings))
    assert [r for r in caplog.records if r.name == "webhook.server"] == []
    assert missing_material(None, []) == []
