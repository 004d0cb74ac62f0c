"""TLS files: check a certificate/key pair, and make a development CA and serving certificate.

In a cluster the certificate comes from Helm, cert-manager or the user; locally regcred makes
its own so ``regcred serve`` works with no set-up. Keys are written 0600 and never committed.
"""

from __future__ import annotations

import datetime as dt
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


def ensure_dev_certificate(directory: Path, hosts: list[str]) -> TlsFiles:
    """Reuse ``directory``'s dev certificate while it is valid for ``hosts``, else make one."""
    files = TlsFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    if files.cert.exists() and files.key.exists() and _covers(files.cert, hosts):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_cert, ca_key = new_ca("regcred development CA", dt.timedelta(days=365), now)
    cert, key = issue(ca_cert, ca_key, hosts, dt.timedelta(days=90), now)
    _write(files.ca, ca_cert, 0o644)
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
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=7)
    return fresh and set(hosts) <= present


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def reload_into(context: ssl.SSLContext, files: TlsFiles) -> bool:
    """Load a rotated pair into the live context: new handshakes use it, open connections
    keep theirs, so rotation drops no request. A broken pair keeps the old one."""
    try:
        check_pair(files.cert, files.key)
        context.load_cert_chain(files.cert, files.key)
    except ValueError:
        return False
    return True
