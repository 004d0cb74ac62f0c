"""End-to-end fixtures: one real control plane per session, the chart applied to it, a real
registry, and regcred running as the chart's ServiceAccount.

These tests need etcd and kube-apiserver from ``hack/kube-bins``. ``.ci/run`` builds them;
without them the tests skip on a developer machine and fail in CI (CI=true).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.conftest import require_tools
from tests.e2e.harness import (
    CREDENTIALS,
    OWN,
    RegcredProcess,
    Serving,
    admin_api,
    b64,
    ensure_namespace,
    install_chart,
    webhook_url,
)
from tests.support.controlplane import ControlPlane, bin_dir, free_port, missing_binaries
from tests.support.google_token import GoogleTokenServer
from tests.support.registry import PrivateRegistry

USER, PASSWORD = "e2e-puller", "e2e-registry-pass"
GAR = "europe-docker.pkg.dev/regcred-e2e/images"
# Short-lived tokens, so the refresher's 2/3-of-life rewrite shows within a test: 45 s lives,
# renewed after 30 s (a token with under 30 s left counts as already expiring).
GOOGLE_TOKEN_SECONDS = 45
# Pods a second release of regcred admits (test_managed_cert.py): the session's install excludes them.
OTHER_RELEASES_NAMESPACES = ("managed-pods",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        message = f"{', '.join(missing)} not in {bin_dir()} (hack/kube-bins builds them; bash .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("control-plane")
    plane = ControlPlane.start(workdir)
    yield plane
    plane.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, control_plane):
    """Name the control plane's logs in a failing test's report (pytest keeps the directory)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"control plane logs: {control_plane.workdir}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def admin(control_plane):
    api = admin_api(control_plane)
    yield api
    api.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    require_tools("docker-registry", "skopeo", "htpasswd")
    with PrivateRegistry.start(tmp_path_factory.mktemp("registry"), USER, PASSWORD) as running:
        for path in ("team-a/app", "team-b/sidecar", "tenant/app", "refresh/app"):
            running.push(path)
        yield running


@pytest.fixture(scope="session")
def google(tmp_path_factory):
    """A local Google token endpoint: the gcr registry's short-lived tokens come from it."""
    server = GoogleTokenServer().start(tmp_path_factory.mktemp("google"))
    server.expires_in = GOOGLE_TOKEN_SECONDS
    yield server
    server.stop()


def registry_list(host: str, token_uri: str) -> list[dict]:
    """The registries every e2e test shares: team-a for most, team-b for the sidecar injector,
    tenant behind a namespaceSelector, one whose credentials Secret does not exist, and an
    Artifact Registry whose short-lived tokens come from the local Google token endpoint."""
    basic = {"type": "basic", "secretRef": CREDENTIALS}
    return [
        {"id": "private", "url": f"{host}/team-a", **basic},
        {"id": "sidecars", "url": f"{host}/team-b", **basic},
        {"id": "tenant", "url": f"{host}/tenant", **basic,
         "namespaceSelector": {"matchLabels": {"regcred-e2e/tenant": "yes"}}},
        {"id": "broken", "url": "broken.registry.invalid", "type": "basic", "secretRef": "no-such-secret"},
        {"id": "gar", "url": GAR, "type": "gcr", "secretRef": "gcr-key", "gcr": {"allowedTokenUris": [token_uri]}},
    ]


@pytest.fixture(scope="session")
def installation(control_plane, admin, registry, google, tmp_path_factory):
    """The chart applied (tls.mode provided), the credentials Secret, and the webhook's port."""
    workdir = tmp_path_factory.mktemp("regcred")
    serving = Serving.create(workdir / "tls")
    port = free_port()
    values = {"registries": registry_list(registry.host, google.token_uri), "replicaCount": 1,
              # Namespaces another release of regcred serves in its own tests (test_managed_cert).
              "excludeNamespaces": ["kube-system", "kube-public", "kube-node-lease", *OTHER_RELEASES_NAMESPACES],
              "tls": {"mode": "provided", "provided": {"secretName": "regcred-tls", "caBundle": serving.ca_bundle}}}
    ensure_namespace(admin, OWN)
    k8s.CoreV1Api(admin).create_namespaced_secret(OWN, {
        "metadata": {"name": CREDENTIALS},
        "data": {"username": b64(USER), "password": b64(PASSWORD)}})
    k8s.CoreV1Api(admin).create_namespaced_secret(OWN, {
        "metadata": {"name": "gcr-key"}, "data": {"key.json": b64(google.new_key().text)}})
    rendered = install_chart(admin, values, url=webhook_url(port), ca_bundle=serving.ca_bundle)
    return {"rendered": rendered, "serving": serving, "port": port, "workdir": workdir, "values": values}


@pytest.fixture(scope="session")
def regcred(control_plane, installation, google):
    """The one replica most tests share; a short refresh interval so changes show within seconds."""
    process = RegcredProcess(control_plane, installation["rendered"], installation["serving"],
                             installation["workdir"], installation["port"],
                             extra_args=("--refresh-interval=0.5",),
                             env={"REQUESTS_CA_BUNDLE": str(google.ca_bundle)})
    process.start()
    yield process
    process.stop()
