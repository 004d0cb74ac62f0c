"""Fixtures for the fake API server's own tests: a fresh server, an ApiClient and CoreV1Api on it."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.fakes.apiserver import FakeApiServer


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def api(server):
    return server.api_client()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)
