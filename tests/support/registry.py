"""A real private container registry for tests, and a real pull client to check it against.

``PrivateRegistry.start`` runs Debian's ``docker-registry`` (CNCF distribution 2.8) on
127.0.0.1 with an ephemeral port, htpasswd (bcrypt) basic auth and TLS from a throwaway CA.
``skopeo`` (containers/image, the library CRI-O and podman pull with) pushes a tiny OCI image
into it and, through ``skopeo_inspect``, tells whether a given auth file gets a pull through.

Everything is written under the directories the caller passes in (pytest's tmp dirs) or under
temporary directories; the CA key is never written at all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import trustme

from .ocilayout import build_oci_layout

REGISTRY_BINARY = "docker-registry"
TOOLS = (REGISTRY_BINARY, "skopeo", "htpasswd")
START_TIMEOUT_SECONDS = 15.0
SKOPEO_TIMEOUT_SECONDS = 60.0

# distribution logs the bound address (not the configured one), which is how we learn the port
# the kernel picked for "127.0.0.1:0" without a racy "find a free port first" dance.
_LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+), tls")

# Where containers/image looks for credentials besides --authfile: it falls back to
# $XDG_CONFIG_HOME/containers/auth.json, $DOCKER_CONFIG or ~/.docker/config.json and ~/.dockercfg
# when the given file has no match, so a developer's own logins could make a test pass.
_CREDENTIAL_ENV = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")


class RegistryStartError(RuntimeError):
    """The registry process exited or did not answer in time; the message carries its log."""


def tools_available() -> list[str]:
    """Return the names of the required tools missing from PATH (empty when all are there)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class PrivateRegistry:
    """A running ``docker-registry``; build one with ``PrivateRegistry.start(...)``."""

    def __init__(self, *, workdir: Path, host: str, username: str, password: str,
                 cert_dir: Path, process: subprocess.Popen, log_path: Path) -> None:
        self.workdir = workdir
        self.host = host
        self.username = username
        self.password = password
        self.cert_dir = cert_dir
        self.log_path = log_path
        self._process = process
        self._layouts: dict[str, Path] = {}

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    @classmethod
    def start(cls, workdir: Path | str, username: str, password: str, *,
              timeout: float = START_TIMEOUT_SECONDS,
              config_overrides: Mapping[str, object] | None = None) -> PrivateRegistry:
        """Start a registry under ``workdir`` and return once it answers HTTPS requests.

        ``config_overrides`` replaces whole top-level sections of the registry's config.yml.
        Raises ``RegistryStartError`` (with the registry's output) if it does not come up.
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        cert_dir, server_cert, server_key = _write_tls(workdir)
        htpasswd = _write_htpasswd(workdir / "htpasswd", username, password)
        config = _write_config(workdir, server_cert, server_key, htpasswd, config_overrides or {})
        log_path = workdir / "registry.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_registry_env(), cwd=workdir,
            )
        try:
            deadline = time.monotonic() + timeout
            host = _wait_until_listening(process, log_path, deadline)
            _wait_until_answering(process, log_path, host, cert_dir / "ca.crt", deadline)
        except BaseException:
            _terminate(process)
            raise
        return cls(workdir=workdir, host=host, username=username, password=password,
                   cert_dir=cert_dir, process=process, log_path=log_path)

    def stop(self) -> None:
        _terminate(self._process)

    def __enter__(self) -> PrivateRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def image(self, repo_path: str, tag: str = "1") -> str:
        """The reference of ``repo_path:tag`` in this registry, without a transport."""
        return f"{self.host}/{repo_path}:{tag}"

    def push(self, repo_path: str, tag: str = "1", *, layout: Path | None = None) -> str:
        """Push an OCI layout (by default a tiny built-in image) to ``host/repo_path:tag``."""
        if layout is None:
            layout = self._default_layout(tag)
        reference = self.image(repo_path, tag)
        result = _run_skopeo(
            ["--insecure-policy", "copy",
             "--dest-creds", f"{self.username}:{self.password}",
             "--dest-cert-dir", str(self.cert_dir),
             f"oci:{layout}:{tag}", f"docker://{reference}"],
            timeout=SKOPEO_TIMEOUT_SECONDS,
        )
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy to {reference} failed:\n{result.stderr}")
        return reference

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _default_layout(self, tag: str) -> Path:
        if tag not in self._layouts:
            self._layouts[tag] = build_oci_layout(self.workdir / "layouts" / tag, tag)
        return self._layouts[tag]


def skopeo_inspect(image_ref: str, authfile: Path | str, cert_dir: Path | str, *,
                   timeout: float = SKOPEO_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo inspect`` for ``image_ref`` seeing only ``authfile``'s credentials.

    Returns the completed process (never raises on a non-zero exit); ``image_ref`` may be
    given with or without the ``docker://`` transport.
    """
    if "://" not in image_ref:
        image_ref = f"docker://{image_ref}"
    return _run_skopeo(
        # --retry-times 0: a refused pull must fail fast, not be retried with back-off.
        ["inspect", "--retry-times", "0", "--authfile", str(authfile),
         "--cert-dir", str(cert_dir), image_ref],
        timeout=timeout,
    )


def authfile_entry(username: str, password: str, *, auth_only: bool = False) -> dict[str, str]:
    """One ``auths`` value as ``kubernetes.io/dockerconfigjson`` Secrets carry it."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    if auth_only:
        return {"auth": auth}
    return {"username": username, "password": password, "auth": auth}


def write_authfile(path: Path | str, auths: Mapping[str, Mapping[str, str]]) -> Path:
    """Write ``{"auths": auths}``, the shape of containers-auth.json and .dockerconfigjson."""
    path = Path(path)
    path.write_text(json.dumps({"auths": dict(auths)}, indent=2))
    return path


def _write_tls(workdir: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA(organization_name="regcred test CA")
    server = ca.issue_cert("127.0.0.1")
    tls_dir = workdir / "tls"
    tls_dir.mkdir(exist_ok=True)
    server_cert, server_key = tls_dir / "server.crt", tls_dir / "server.key"
    for index, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(server_cert), append=index > 0)
    server.private_key_pem.write_to_path(str(server_key))
    # skopeo's --cert-dir reads every *.crt as a CA and *.cert/*.key pairs as a client
    # certificate, so this directory holds the CA certificate and nothing else.
    cert_dir = workdir / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    return cert_dir, server_cert, server_key


def _write_htpasswd(path: Path, username: str, password: str) -> Path:
    # distribution only accepts bcrypt entries; cost 4 (the minimum) because the registry
    # checks the hash on every request and these credentials guard nothing.
    result = subprocess.run(
        ["htpasswd", "-B", "-C", "4", "-i", "-n", username],
        input=password, capture_output=True, text=True, check=False, timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"htpasswd failed: {result.stderr}")
    path.write_text(result.stdout)
    return path


def _write_config(workdir: Path, server_cert: Path, server_key: Path, htpasswd: Path,
                  overrides: Mapping[str, object]) -> Path:
    config = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": "127.0.0.1:0",
            # Without a secret the registry logs a warning and makes one up; set it to be quiet.
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(server_cert), "key": str(server_key)},
        },
        "auth": {"htpasswd": {"realm": "regcred-test", "path": str(htpasswd)}},
    } | dict(overrides)
    path = workdir / "config.yml"
    # JSON is valid YAML, and json.dumps quotes tmp paths safely.
    path.write_text(json.dumps(config, indent=2))
    return path


def _registry_env() -> dict[str, str]:
    # REGISTRY_* variables override the config file field by field (REGISTRY_HTTP_ADDR, ...).
    return {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}


def _wait_until_listening(process: subprocess.Popen, log_path: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        _check_alive(process, log_path)
        time.sleep(0.05)
    raise _start_error("did not log its listening address in time", log_path)


def _wait_until_answering(process: subprocess.Popen, log_path: Path, host: str,
                          ca_file: Path, deadline: float) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    while time.monotonic() < deadline:
        _check_alive(process, log_path)
        try:
            urllib.request.urlopen(f"https://{host}/v2/", context=context, timeout=2).close()
        except urllib.error.HTTPError as error:
            # Basic: htpasswd auth. Bearer: token auth, whose realm hands out registry tokens.
            if error.code == 401 and error.headers.get("WWW-Authenticate", "").startswith(("Basic", "Bearer")):
                return
            raise _start_error(f"answered /v2/ with {error.code}", log_path) from error
        except OSError:
            time.sleep(0.05)
            continue
        # A 200 without credentials means auth is off: every auth test would lie.
        raise _start_error("answered /v2/ without asking for credentials", log_path)
    raise _start_error(f"did not answer https://{host}/v2/ in time", log_path)


def _check_alive(process: subprocess.Popen, log_path: Path) -> None:
    if process.poll() is not None:
        raise _start_error(f"exited with status {process.returncode}", log_path)


def _start_error(what: str, log_path: Path) -> RegistryStartError:
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    return RegistryStartError(f"{REGISTRY_BINARY} {what}; its output:\n{log[-4000:]}")


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_skopeo(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="regcred-skopeo-") as home:
        return subprocess.run(
            ["skopeo", *args], env=_isolated_env(Path(home)), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def _isolated_env(home: Path) -> dict[str, str]:
    """An environment in which skopeo sees no credentials or config but what we pass it."""
    env = {key: value for key, value in os.environ.items()
           if key not in _CREDENTIAL_ENV and not key.startswith("CONTAINERS_")}
    for name in ("run", "config", "tmp"):
        (home / name).mkdir()
    # An empty registries.conf: the machine's could add mirrors, blocks or credential helpers.
    (home / "registries.conf").write_text("")
    (home / "containers.conf").write_text("")
    env.update(
        HOME=str(home),
        XDG_RUNTIME_DIR=str(home / "run"),
        XDG_CONFIG_HOME=str(home / "config"),
        TMPDIR=str(home / "tmp"),
        CONTAINERS_REGISTRIES_CONF=str(home / "registries.conf"),
        CONTAINERS_CONF=str(home / "containers.conf"),
    )
    return env
