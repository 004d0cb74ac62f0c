"""TLS files: check a certificate/key pair, and make a development CA and serving certificate.

In a cluster the certificate comes from Helm, cert-manager or the user; locally regcred makes
its own so ``regcred serve`` works with no set-up. Keys are written 0600 and never committed.

A pair that loads is not enough: the API server refuses an expired certificate or one without
the Service's name, and with ``failurePolicy: Ignore`` it then skips the webhook silently.
``check_serving`` refuses both at load and on reload, so the failure is loud instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from webhook.certauthority import issue, new_ca


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None


def check_pair(cert: Path, key: Path) -> None:
    """Raise ValueError with a safe message unless the pair loads as a server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert} with key {key}: {type(exc).__name__}") from None


def check_serving(cert: Path, names: tuple[str, ...], now: dt.datetime | None = None) -> dt.datetime:
    """The leaf's notAfter; ValueError with a safe message when it is not valid at ``now`` or
    its SANs do not cover every name in ``names`` (DNS names or IP addresses)."""
    try:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read TLS certificate {cert}: {type(exc).__name__}") from None
    now = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise ValueError(f"TLS certificate {cert} is not valid now: valid from "
                         f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
                         f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    missing = [name for name in names if not _names_cover(leaf, name)]
    if missing:
        raise ValueError(f"TLS certificate {cert} does not cover {', '.join(missing)} (its subjectAltNames)")
    return leaf.not_valid_after_utc


def _names_cover(leaf: x509.Certificate, name: str) -> bool:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False  # clients have ignored the common name for years (RFC 6125, Go since 1.15)
    try:
        return ipaddress.ip_address(name) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    wanted = name.lower().rstrip(".")
    for dns in names.get_values_for_type(x509.DNSName):
        dns = dns.lower().rstrip(".")
        # A wildcard stands for exactly one leftmost label (RFC 6125 6.4.3).
        if dns == wanted or (dns.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == dns[2:]):
            return True
    return False


def ensure_dev_certificate(directory: Path, hosts: list[str]) -> TlsFiles:
    """Reuse ``directory``'s dev certificate while it is valid for ``hosts``, else make one."""
    ca = directory / "ca.crt"
    files = TlsFiles(directory / "tls.crt", directory / "tls.key", ca)
    if files.cert.exists() and files.key.exists() and _covers(files.cert, hosts):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = new_ca("regcred development CA", dt.timedelta(days=365), now)
    cert, key = issue(ca_cert, ca_key, hosts, dt.timedelta(days=90), now)
    _write(ca, ca_cert, 0o644)
    _write(files.cert, cert, 0o644)
    _write(files.key, key, 0o600)
    return files


def _covers(cert_path: Path, hosts: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, OSError):
        return False
    present = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    present |= {str(n) for n in names.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=7)
    return fresh and set(hosts) <= present


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def reload_into(context: ssl.SSLContext, files: TlsFiles) -> bool:
    """Load a rotated pair into the live context: new handshakes use it, open connections
    keep theirs, so rotation drops no request. A broken pair keeps the old one (callers
    check the certificate with ``check_serving`` first)."""
    try:
        check_pair(files.cert, files.key)
        context.load_cert_chain(files.cert, files.key)
    except ValueError:
        return False
    return True
