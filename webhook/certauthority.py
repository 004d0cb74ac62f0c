"""The webhook's own CA and serving certificate (``tls.mode: managed``): make them, and decide
what is due. Pure: the clock and the API server's current caBundle arrive as arguments.

The pattern of Kyverno's and Gatekeeper's cert-controller: a long-lived CA signs short-lived
serving certificates, so the webhook configuration's ``caBundle`` changes only when the CA
does. Renewal happens at 2/3 of a certificate's life (cert-manager's default): a third of its
life is left to retry. A CA rotation is two steps: the new CA joins the bundle next to the old
one, and only once the API server trusts it does a serving certificate signed by it go into
use; the old CA leaves the bundle when it expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_FRACTION = 2 / 3
MAX_BACKDATE = dt.timedelta(minutes=5)
_SLACK = dt.timedelta(seconds=1)  # another node's clock may run a little behind ours


@dataclass(frozen=True)
class Material:
    """What the certificate Secret holds, as PEM: the signing CA, the CAs to trust, the serving pair."""

    ca_cert: bytes
    ca_key: bytes
    bundle: bytes
    tls_cert: bytes
    tls_key: bytes

    KEYS = ("ca.crt", "ca.key", "ca-bundle.crt", "tls.crt", "tls.key")

    def as_data(self) -> dict[str, bytes]:
        return dict(zip(self.KEYS, (self.ca_cert, self.ca_key, self.bundle, self.tls_cert, self.tls_key), strict=True))

    @classmethod
    def from_data(cls, data: dict[str, bytes]) -> Material | None:
        """None when a key is missing or a certificate or key does not parse: made anew."""
        if not all(data.get(key) for key in cls.KEYS):
            return None
        material = cls(*(data[key] for key in cls.KEYS))
        try:
            if not (material.ca and material.serving and parse_bundle(material.bundle)):
                return None
            for key in (material.ca_key, material.tls_key):
                serialization.load_pem_private_key(key, None)
        except ValueError:
            return None
        return material

    @property
    def ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert)

    @property
    def serving(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.tls_cert)


def parse_bundle(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def due(cert: x509.Certificate, now: dt.datetime, fraction: float = RENEW_FRACTION) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * fraction


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verifies(cert: x509.Certificate, bundle: Sequence[x509.Certificate], now: dt.datetime) -> bool:
    """Whether an API server trusting ``bundle`` accepts ``cert`` now."""
    valid = cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    return valid and any(ca.not_valid_before_utc <= now < ca.not_valid_after_utc and issued_by(cert, ca)
                         for ca in bundle)


def sans(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n) for n in names.get_values_for_type(x509.DNSName)} | \
        {str(n) for n in names.get_values_for_type(x509.IPAddress)}


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _window(now: dt.datetime, validity: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    return now - min(MAX_BACKDATE, validity / 10), now + validity


def new_ca(common_name: str, validity: dt.timedelta, now: dt.datetime) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 CA allowed to sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _window(now, validity)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _pem(cert), _key_pem(key)


def issue(ca_cert: bytes, ca_key: bytes, names: Sequence[str], validity: dt.timedelta,
          now: dt.datetime) -> tuple[bytes, bytes]:
    """A serving certificate for ``names`` (DNS names or IP addresses), never outliving its CA."""
    ca = x509.load_pem_x509_certificate(ca_cert)
    # The CA regcred made is EC; sign() refuses a key type that cannot issue certificates itself.
    signer = cast(CertificateIssuerPrivateKeyTypes, serialization.load_pem_private_key(ca_key, None))
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(now, validity)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(max(start, ca.not_valid_before_utc)).not_valid_after(min(end, ca.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                cast(CertificateIssuerPublicKeyTypes, ca.public_key())), critical=False)
            .sign(signer, hashes.SHA256()))
    return _pem(cert), _key_pem(key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class Policy:
    names: tuple[str, ...]
    cert_validity: dt.timedelta
    ca_validity: dt.timedelta
    ca_name: str = "regcred webhook CA"


def plan(current: Material | None, policy: Policy, *, now: dt.datetime, ca_trusted: bool) -> Material:
    """The material the Secret should hold now. ``ca_trusted``: the API server's caBundle has
    held ``current``'s CA long enough for every API server to trust it (the controller's call)."""
    if current is None:
        ca_cert, ca_key = new_ca(policy.ca_name, policy.ca_validity, now)
        tls_cert, tls_key = issue(ca_cert, ca_key, policy.names, policy.cert_validity, now)
        return Material(ca_cert, ca_key, ca_cert, tls_cert, tls_key)
    material = current
    # A certificate that outlives what the policy allows now (its validity was lowered) is due too.
    if due(material.ca, now) or material.ca.not_valid_after_utc > now + policy.ca_validity + _SLACK:
        # Step one of a CA rotation: trust the new CA next to the old; keep serving the old pair.
        ca_cert, ca_key = new_ca(policy.ca_name, policy.ca_validity, now)
        material = replace(material, ca_cert=ca_cert, ca_key=ca_key, bundle=material.bundle + ca_cert)
        ca_trusted = False
    live = [ca for ca in parse_bundle(material.bundle) if now < ca.not_valid_after_utc]
    if [fingerprint(ca) for ca in live] != [fingerprint(ca) for ca in parse_bundle(material.bundle)]:
        material = replace(material, bundle=b"".join(_pem(ca) for ca in live) or material.ca_cert)
    serving = material.serving
    stale = (due(serving, now) or not issued_by(serving, material.ca) or sans(serving) != set(policy.names)
             or serving.not_valid_after_utc > now + policy.cert_validity + _SLACK)
    if stale and (ca_trusted or not verifies(serving, live, now)):
        tls_cert, tls_key = issue(material.ca_cert, material.ca_key, policy.names, policy.cert_validity, now)
        material = replace(material, tls_cert=tls_cert, tls_key=tls_key)
    return material
