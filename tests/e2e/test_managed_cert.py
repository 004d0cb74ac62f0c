"""tls.mode managed on a real API server: regcred makes its own CA and serving certificate, puts
the CA in its MutatingWebhookConfiguration, and rotates both under a stream of Pod creations.

A release of its own (``managed`` in namespace ``regcred-managed``), with failurePolicy Fail so
that a Pod the API server could not get admitted by regcred (a TLS failure, say) is a failed
creation, and a namespaceSelector of its own so no other test's Pods reach it. The webhook is
called through a url, so the certificate's names are 127.0.0.1 (``tls.managed.sans``).
"""

from __future__ import annotations

import base64
import threading
import time

import pytest
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import OTHER_RELEASES_NAMESPACES, PASSWORD, USER
from tests.e2e.harness import (
    CREDENTIALS,
    RegcredProcess,
    Serving,
    apply,
    b64,
    ensure_namespace,
    eventually,
    pod,
    webhook_url,
)
from tests.support import helmchart
from tests.support.controlplane import free_port
from webhook.certauthority import issued_by

NAMESPACE, RELEASE, FULLNAME = "regcred-managed", "managed", "managed-regcred"
CERT_STORE = f"{FULLNAME}-webhook-cert"
PODS = OTHER_RELEASES_NAMESPACES[0]
LABEL = {"regcred-e2e/managed": "yes"}


@pytest.fixture(scope="module")
def managed(admin, registry, tmp_path_factory):
    """The chart applied with tls.mode managed (the default): no caBundle, a url to regcred."""
    values = {"registries": [{"id": "private", "url": f"{registry.host}/team-a", "type": "basic",
                              "secretRef": CREDENTIALS}],
              "replicaCount": 1, "webhook": {"failurePolicy": "Fail"}, "tls": {"managed": {"sans": ["127.0.0.1"]}}}
    rendered = helmchart.render(values, namespace=NAMESPACE, name=RELEASE)
    assert rendered.find("Secret") is None
    port = free_port()
    for obj in rendered.objects:
        if obj["kind"] == "MutatingWebhookConfiguration":
            (hook,) = obj["webhooks"]
            assert "caBundle" not in hook["clientConfig"]
            hook["clientConfig"] = {"url": webhook_url(port)}
            hook["namespaceSelector"] = {"matchLabels": LABEL}
    ensure_namespace(admin, NAMESPACE)
    # The session's install excludes this namespace (excludeNamespaces); regcred.io/inject=disabled
    # would not do: regcred enforces that opt-out itself, so this release would refuse it too.
    ensure_namespace(admin, PODS, LABEL)
    k8s.CoreV1Api(admin).create_namespaced_secret(NAMESPACE, {
        "metadata": {"name": CREDENTIALS}, "data": {"username": b64(USER), "password": b64(PASSWORD)}})
    for obj in rendered.objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"):
            obj["metadata"].setdefault("namespace", NAMESPACE)
    apply(admin, rendered.objects)
    workdir = tmp_path_factory.mktemp("managed")
    yield {"rendered": rendered, "port": port, "workdir": workdir}
    # Fail-closed webhook of a process about to stop: remove it so no later Pod depends on it.
    k8s.AdmissionregistrationV1Api(admin).delete_mutating_webhook_configuration(FULLNAME)


def process(control_plane, managed, name: str, *extra: str) -> RegcredProcess:
    workdir = managed["workdir"] / name
    tls = workdir / "tls"
    serving = Serving(None, tls / "tls.crt", tls / "tls.key", managed["workdir"] / "ca.crt")
    return RegcredProcess(control_plane, managed["rendered"], serving, workdir, managed["port"], name=name,
                          namespace=NAMESPACE, service_account=FULLNAME, extra_args=extra)


def material(admin) -> dict[str, bytes]:
    secret = k8s.CoreV1Api(admin).read_namespaced_secret(CERT_STORE, NAMESPACE)
    return {key: base64.b64decode(value) for key, value in secret.data.items()}


def bundle(admin) -> bytes:
    (hook,) = k8s.AdmissionregistrationV1Api(admin).read_mutating_webhook_configuration(FULLNAME).webhooks
    return base64.b64decode(hook.client_config.ca_bundle or "")


def start(admin, regcred: RegcredProcess, managed) -> RegcredProcess:
    regcred.start(wait=False)
    eventually(lambda: bundle(admin), 30, "the caBundle patched in")
    (managed["workdir"] / "ca.crt").write_bytes(bundle(admin))  # how the readiness probe trusts it
    regcred.wait_ready()
    return regcred


def patches(control_plane) -> int:
    return sum(1 for event in control_plane.audit_events()
               if event.get("verb") == "patch"
               and (event.get("objectRef") or {}).get("resource") == "mutatingwebhookconfigurations"
               and (event.get("objectRef") or {}).get("name") == FULLNAME)


class PodStream:
    """Pods created back to back from a thread; every failure is kept."""

    def __init__(self, core, registry):
        self._core, self._image = core, registry.image("team-a/app")
        self.created, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stored = self._core.create_namespaced_pod(PODS, pod("s-", self._image))
                if [ref.name for ref in stored.spec.image_pull_secrets or []] != ["regcred-private"]:
                    self.failures.append("admitted without the pull secret")
                self.created += 1
            except ApiException as exc:
                self.failures.append(f"HTTP {exc.status}: {exc.reason}")
            time.sleep(0.05)

    def __enter__(self) -> PodStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def test_the_api_server_calls_regcred_once_it_patched_the_ca_bundle_and_a_restart_reuses_it(
        admin, control_plane, managed, registry):
    core = k8s.CoreV1Api(admin)
    first = start(admin, process(control_plane, managed, "first"), managed)
    try:
        made = material(admin)
        ca = x509.load_pem_x509_certificate(made["ca.crt"])
        assert bundle(admin) == made["ca-bundle.crt"] == made["ca.crt"]
        x509.load_pem_x509_certificate(made["tls.crt"]).verify_directly_issued_by(ca)
        stored = core.create_namespaced_pod(PODS, pod("first", registry.image("team-a/app")))
        assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private"]
    finally:
        first.stop()
    before = patches(control_plane)
    assert before >= 1
    second = start(admin, process(control_plane, managed, "second"), managed)
    try:
        assert material(admin) == made  # the CA and certificate reused
        stored = core.create_namespaced_pod(PODS, pod("second", registry.image("team-a/app")))
        assert [ref.name for ref in stored.spec.image_pull_secrets] == ["regcred-private"]
        time.sleep(2)  # a few rounds of the controller
        assert patches(control_plane) == before
        assert "webhook caBundle updated" not in second.log()
    finally:
        second.stop()


def test_a_serving_certificate_rotation_under_pod_creations_fails_none(admin, control_plane, managed, registry):
    ca_before, bundle_before = material(admin)["ca.crt"], bundle(admin)
    regcred = start(admin, process(control_plane, managed, "serving", "--webhook-cert-validity=6"), managed)
    seen = set()
    try:
        with PodStream(k8s.CoreV1Api(admin), registry) as stream:
            deadline = time.monotonic() + 14
            while time.monotonic() < deadline:
                seen.add(material(admin)["tls.crt"])
                time.sleep(0.2)
        assert stream.failures == [] and stream.created >= 20
        assert len(seen) >= 3  # the lowered validity's reissue, then a renewal every 4 s
        assert material(admin)["ca.crt"] == ca_before and bundle(admin) == bundle_before
    finally:
        regcred.stop()


def test_a_ca_rotation_under_pod_creations_fails_none(admin, control_plane, managed, registry):
    """A 45 s CA: the lowered validity rotates the CA at once, and that CA rotates again after
    30 s, this time while Pods are being created. (A 24 s CA left 8 s between its renewal and
    the old pair's expiry, too little on a loaded 2-core machine: the served certificate ran out.)"""
    regcred = start(admin, process(control_plane, managed, "ca", "--webhook-ca-validity=45",
                                   "--webhook-cert-validity=45"), managed)
    try:
        old_ca = x509.load_pem_x509_certificate(material(admin)["ca.crt"])
        with PodStream(k8s.CoreV1Api(admin), registry) as stream:
            def rotated() -> bool:
                now = material(admin)
                new_ca = x509.load_pem_x509_certificate(now["ca.crt"])
                if new_ca == old_ca:
                    return False
                return issued_by(x509.load_pem_x509_certificate(now["tls.crt"]), new_ca)
            eventually(rotated, 70, "the CA rotated and a certificate signed by the new one", interval=0.3)
            time.sleep(2)  # served a while with the new pair
        assert stream.failures == [] and stream.created >= 20
        trusted = x509.load_pem_x509_certificates(bundle(admin))
        new_ca = x509.load_pem_x509_certificate(material(admin)["ca.crt"])
        assert old_ca in trusted and new_ca in trusted  # old and new across the overlap
    finally:
        regcred.stop()
