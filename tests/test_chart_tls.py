"""The chart's four TLS modes: what the API server will trust, and what regcred will serve.

selfSigned is checked with real X.509 and a real TLS handshake; its reuse of an existing
Secret on upgrade (``lookup``) is checked by rendering against the fake API server, the way
``helm upgrade`` renders: offline (``helm template``) ``lookup`` always finds nothing.
"""

from __future__ import annotations

import base64
import ssl

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.fakes.apiserver import FakeApiServer
from tests.support.helmchart import NAMESPACE, helm, render, render_against
from webhook.certs import check_pair

SERVICE_DNS = f"regcred.{NAMESPACE}.svc"
# The webhook Service, which the API server dials, and the CI API's Service, which in-cluster
# CI runners dial (README: "Where the CA comes from"), whether or not ci.enabled is set yet.
CERTIFICATE_NAMES = [f"{service}.{NAMESPACE}{suffix}" for service in ("regcred", "regcred-ci")
                     for suffix in ("", ".svc", ".svc.cluster.local")]
SELF_SIGNED = {"tls": {"mode": "selfSigned"}}
PROVIDED = {"tls": {"mode": "provided", "provided": {"secretName": "corp-tls", "caBundle": "Q0EgYnVuZGxl"}}}


def _tls_volume_secret(rendered) -> str:
    spec = rendered.deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in rendered.container["volumeMounts"] if m["mountPath"] == "/etc/regcred/tls"]
    assert "subPath" not in mount, "the kubelet never updates a subPath mount: rotation would not reach regcred"
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume["secret"]["secretName"]


def _handshake(cert_pem: bytes, key_pem: bytes, ca_pem: bytes, hostname: str, tmp_path) -> None:
    """A TLS handshake in memory: regcred's side loads the pair, the client trusts only the CA."""
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    check_pair(tmp_path / "tls.crt", tmp_path / "tls.key")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("TLS handshake did not complete")


# ---- managed (the default) ----------------------------------------------------------------


def test_managed_is_the_default_and_renders_no_key_material():
    """regcred makes its own certificate: nothing secret in the manifests, nothing random."""
    first, second = render(), render()
    assert first.sources == second.sources  # byte-identical: a GitOps sync changes nothing
    text = "".join(first.sources.values())
    assert first.find("Secret") is None and "PRIVATE KEY" not in text and "CERTIFICATE" not in text
    assert "caBundle" not in first.webhook["clientConfig"]  # patched in by regcred
    spec = first.deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    assert "emptyDir" in volume  # regcred writes the certificate there
    assert "--webhook-cert-secret=regcred-webhook-cert" in first.args
    assert "--webhook-configuration=regcred" in first.args
    assert f"--webhook-cert-sans={','.join(CERTIFICATE_NAMES)}" in first.args


def test_managed_names_are_configurable():
    rendered = render({"tls": {"managed": {"sans": ["127.0.0.1", "regcred.example"], "certValidityDays": 30}}})
    assert "--webhook-cert-sans=127.0.0.1,regcred.example" in rendered.args
    assert f"--webhook-cert-validity={30 * 86400}" in rendered.args


def test_managed_rbac_is_one_secret_and_one_webhook_configuration():
    rendered = render()
    (hooks,) = [r for r in rendered.get("ClusterRole")["rules"] if "mutatingwebhookconfigurations" in r["resources"]]
    assert (hooks["resourceNames"], hooks["verbs"]) == (["regcred"], ["get", "patch"])
    (cert,) = [r for r in rendered.get("Role")["rules"] if r.get("resourceNames") == ["regcred-webhook-cert"]]
    assert cert["verbs"] == ["get", "update"]
    assert not [r for r in render(SELF_SIGNED).get("ClusterRole")["rules"]
                if "mutatingwebhookconfigurations" in r["resources"]]


# ---- selfSigned -------------------------------------------------------------------------------


def test_self_signed_fills_the_ca_bundle():
    rendered = render(SELF_SIGNED)
    secret = rendered.get("Secret", "regcred-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert rendered.webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert _tls_volume_secret(rendered) == "regcred-tls"
    assert "cert-manager.io/inject-ca-from" not in rendered.get("MutatingWebhookConfiguration")["metadata"].get(
        "annotations", {})
    assert rendered.find("Certificate") is None


def test_self_signed_certificate_is_what_the_api_server_trusts(tmp_path):
    secret = render(SELF_SIGNED).get("Secret", "regcred-tls")
    ca_pem, cert_pem, key_pem = (base64.b64decode(secret["data"][k]) for k in ("ca.crt", "tls.crt", "tls.key"))
    ca, cert = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == CERTIFICATE_NAMES
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3649
    # The API server dials <service>.<namespace>.svc and trusts only the caBundle.
    _handshake(cert_pem, key_pem, ca_pem, SERVICE_DNS, tmp_path)


def test_self_signed_validity_is_configurable():
    secret = render({"tls": {"mode": "selfSigned", "selfSigned": {"validityDays": 30}}}).get("Secret", "regcred-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (29, 30)


def test_helm_template_makes_a_new_ca_every_time():
    """Why the chart looks the Secret up: offline, every render is a new CA."""
    first, second = (render(SELF_SIGNED).get("Secret", "regcred-tls")["data"]["ca.crt"] for _ in range(2))
    assert first != second


@pytest.fixture
def cluster(tmp_path):
    with FakeApiServer(namespaces=("default", "kube-system", NAMESPACE)) as server:
        yield server, server.kubeconfig(tmp_path / "kubeconfig")


def test_upgrade_keeps_the_existing_certificate(cluster):
    server, kubeconfig = cluster
    installed = render(SELF_SIGNED).get("Secret", "regcred-tls")
    server.put_object("secrets", {**installed, "metadata": {"name": "regcred-tls", "namespace": NAMESPACE}}, NAMESPACE)
    server.reset_log()

    upgraded = render_against(kubeconfig, SELF_SIGNED)

    assert upgraded.get("Secret", "regcred-tls")["data"] == installed["data"]
    assert upgraded.webhook["clientConfig"]["caBundle"] == installed["data"]["ca.crt"]
    assert server.count(verb="get", resource="secrets", namespace=NAMESPACE, name="regcred-tls") >= 1


def test_upgrade_without_the_secret_or_with_an_incomplete_one_makes_a_new_certificate(cluster):
    server, kubeconfig = cluster
    first = render_against(kubeconfig, SELF_SIGNED).get("Secret", "regcred-tls")
    assert set(first["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    server.put_object("secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                  "metadata": {"name": "regcred-tls", "namespace": NAMESPACE},
                                  "data": {"tls.crt": first["data"]["tls.crt"]}}, NAMESPACE)
    again = render_against(kubeconfig, SELF_SIGNED)
    secret = again.get("Secret", "regcred-tls")
    assert secret["data"]["ca.crt"] != first["data"]["ca.crt"]
    assert again.webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]


# ---- certManager ------------------------------------------------------------------------------


def test_cert_manager_issues_through_a_ca_of_its_own():
    rendered = render({"tls": {"mode": "certManager"}})
    assert rendered.find("Secret") is None
    certificate = rendered.get("Certificate", "regcred")
    assert certificate["spec"]["secretName"] == _tls_volume_secret(rendered) == "regcred-tls"
    assert certificate["spec"]["dnsNames"] == CERTIFICATE_NAMES
    assert certificate["spec"]["usages"] == ["server auth", "digital signature"]
    assert certificate["spec"]["issuerRef"] == {"name": "regcred-ca", "kind": "Issuer", "group": "cert-manager.io"}
    # selfsign Issuer -> CA Certificate -> CA Issuer -> serving Certificate: renewing the
    # serving certificate never changes the CA, so the caBundle stays valid throughout.
    ca_issuer = rendered.get("Issuer", "regcred-ca")
    ca_certificate = rendered.get("Certificate", "regcred-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_certificate["spec"]["secretName"]}}
    assert ca_certificate["spec"]["isCA"] is True
    assert ca_certificate["spec"]["issuerRef"]["name"] == "regcred-selfsign"
    assert rendered.get("Issuer", "regcred-selfsign")["spec"] == {"selfSigned": {}}
    # cainjector fills the caBundle from the serving Certificate.
    annotations = rendered.get("MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/regcred"
    assert "caBundle" not in rendered.webhook["clientConfig"]


def test_cert_manager_with_an_existing_issuer():
    rendered = render({"tls": {"mode": "certManager", "certManager": {
        "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}, "duration": "720h", "renewBefore": "240h"}}})
    assert rendered.all("Issuer") == []
    (certificate,) = rendered.all("Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert (certificate["spec"]["duration"], certificate["spec"]["renewBefore"]) == ("720h", "240h")


# ---- provided ---------------------------------------------------------------------------------


def test_provided_uses_your_secret_and_ca_bundle():
    rendered = render(PROVIDED)
    assert rendered.find("Secret") is None and rendered.find("Certificate") is None
    assert _tls_volume_secret(rendered) == "corp-tls"
    assert rendered.webhook["clientConfig"]["caBundle"] == "Q0EgYnVuZGxl"


@pytest.mark.parametrize("provided", [
    pytest.param({"secretName": "corp-tls"}, id="no-caBundle"),
    pytest.param({"caBundle": "Q0E="}, id="no-secretName"),
])
def test_provided_needs_both_values(provided):
    with pytest.raises(helm.HelmValuesError, match="provided"):
        render({"tls": {"mode": "provided", "provided": provided}})
