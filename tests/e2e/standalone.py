"""A control plane of a test module's own, with the chart applied and one ``regcred serve``.

For tests that need the API server started with flags of their own (``--client-ca``) or that
must not share the session's control plane (a flood). The module defines ``control_plane``
from it, which replaces the session fixture of conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client as k8s

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
from tests.support.controlplane import ControlPlane, bin_dir, missing_binaries

REGISTRY = "registry.example.com/team"


def own_control_plane(workdir: Path, extra_apiserver_args: tuple[str, ...] = ()) -> ControlPlane:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{', '.join(missing)} not in {bin_dir()}")
    return ControlPlane.start(workdir, extra_apiserver_args=extra_apiserver_args)


@contextmanager
def installed_regcred(plane: ControlPlane, workdir: Path, port: int, *, extra_args: tuple[str, ...] = (),
                      process_class: type[RegcredProcess] = RegcredProcess, **fields
                      ) -> Iterator[tuple[RegcredProcess, k8s.ApiClient]]:
    """The chart applied with one basic registry (``REGISTRY``), and regcred serving it on ``port``."""
    admin = admin_api(plane)
    serving = Serving.create(workdir / "tls")
    values = {"replicaCount": 1, "registries": [{"id": "private", "url": REGISTRY, "type": "basic",
                                                 "secretRef": CREDENTIALS}],
              "tls": {"mode": "provided", "provided": {"secretName": "regcred-tls", "caBundle": serving.ca_bundle}}}
    ensure_namespace(admin, OWN)
    k8s.CoreV1Api(admin).create_namespaced_secret(OWN, {
        "metadata": {"name": CREDENTIALS}, "data": {"username": b64("puller"), "password": b64("pw")}})
    rendered = install_chart(admin, values, url=webhook_url(port), ca_bundle=serving.ca_bundle)
    process = process_class(plane, rendered, serving, workdir / "regcred", port, extra_args=extra_args, **fields)
    process.start()
    try:
        yield process, admin
    finally:
        process.stop()
        admin.close()
