"""A `regcred serve` subprocess of this tree, over TLS on 127.0.0.1, for tests that need the real listener."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_serve(workdir: Path, *extra: str, client_cert: tuple[Path, Path] | None = None):
    """A `regcred serve` on the bundled example, over TLS on 127.0.0.1; yields (port, an SSL context
    trusting it and presenting ``client_cert`` if given, the process)."""
    port = _free_port()
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(EXAMPLES / "registries.yaml"),
         "--secrets-dir", str(EXAMPLES / "credentials"), "--dev-certs-dir", str(workdir / "certs"),
         "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", *extra],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's webhook, whatever is installed
    ca = workdir / "certs" / "ca.crt"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                context = ssl.create_default_context(cafile=str(ca))
                if client_cert is not None:
                    context.load_cert_chain(*map(str, client_cert))
                if httpx.get(f"https://127.0.0.1:{port}/readyz", verify=context).status_code == 200:
                    break
            except (httpx.HTTPError, OSError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("regcred serve did not become ready:\n" + (workdir / "serve.log").read_text())
            time.sleep(0.1)
        yield port, context, process
    finally:
        process.kill()
        process.wait()
