"""Shared fixtures: the app built in-process with fakes of our own seams, system tools, and the
secret-hygiene check every test runs under (tests/support/hygiene.py, sensitive.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.support import hygiene
from tests.support.sensitive import observe_response, register
from webhook.activeregistries import ActiveRegistries
from webhook.app import Dependencies, Readiness, create_app
from webhook.credentialcache import CredentialCache
from webhook.metrics import Metrics
from webhook.providers.basic import BasicProvider
from webhook.pullsecrets import InMemorySecretStore
from webhook.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"

# No test may reach a cloud metadata endpoint (169.254.169.254): boto3's default chain would.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

# Keys of a credentials Secret whose values are material (username and ids are not).
_MATERIAL_KEYS = ("password", "aws_secret_access_key", "aws_session_token", "token")


class DictMaterial:
    """MaterialSource over a dict: credentials Secrets by name."""

    def __init__(self, secrets: Mapping[str, Mapping[str, str]] | None = None):
        self.secrets = {name: {k: v.encode() for k, v in data.items()} for name, data in (secrets or {}).items()}
        for name, data in (secrets or {}).items():
            for key in _MATERIAL_KEYS:
                register(data.get(key), f"credentials Secret {name} key {key}")

    def read(self, name: str) -> Mapping[str, bytes] | None:
        return self.secrets.get(name)


def build_deps(registries_yaml: str, secrets: Mapping[str, Mapping[str, str]] | None = None) -> Dependencies:
    metrics = Metrics()
    config = ActiveRegistries(metrics)
    assert config.apply_text(registries_yaml, "test"), config.errors
    tokens = CredentialCache({"basic": BasicProvider()}, DictMaterial(secrets), metrics)
    readiness = Readiness({"certificate loaded": True})
    return Dependencies(metrics, config, InMemorySecretStore(), tokens, readiness)


@pytest.fixture
def make_client():
    """Build the app around a registry list and credentials; yields a TestClient factory.

    Every response is shown to the hygiene check: an AdmissionReview answer (warnings included)
    and an error body must never carry credential material.
    """
    clients: list[TestClient] = []

    def make(registries_yaml: str, secrets=None, namespaces=None, **settings) -> tuple[TestClient, Dependencies]:
        deps = build_deps(registries_yaml, secrets)
        if namespaces is not None:
            deps.namespaces = namespaces
        client = TestClient(create_app(Settings(**settings), deps))
        client.event_hooks = {"request": [], "response": [observe_response]}
        client.__enter__()
        clients.append(client)
        return client, deps

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def require_tools(*tools: str) -> None:
    """Skip on a developer machine without the tools; CI installs them, so fail there."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"missing tools: {', '.join(missing)} (bash .ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    hygiene.install()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    hygiene.register_module_constants({item.module for item in items if getattr(item, "module", None)})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    terminalreporter.write_line(hygiene.summary())


@pytest.fixture(scope="module", autouse=True)
def _subprocess_logs_hygiene(tmp_path_factory: pytest.TempPathFactory):
    """Log files of ``regcred serve`` subprocesses, once the module's servers have exited
    (this fixture is set up first in the module, so it is torn down last)."""
    yield
    hygiene.check_log_files(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _secret_hygiene():
    """Every log record, Python warning, metric scrape and observed error body of this test
    must hold no registered credential value."""
    with hygiene.Capture() as capture:
        yield capture
    capture.check()
