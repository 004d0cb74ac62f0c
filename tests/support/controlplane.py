"""A real Kubernetes control plane for tests and for people: etcd and kube-apiserver, built by
``hack/kube-bins``, started on 127.0.0.1 on free ports, the way controller-runtime's envtest does.

- Admin is a client certificate in ``O=system:masters``; everyone else is authorised by RBAC.
- A service-account issuer and signing key, so TokenRequest works and a process can run as a
  ServiceAccount (``service_account_kubeconfig``).
- The default admission plugins, MutatingAdmissionWebhook among them, less ServiceAccount:
  with no kube-controller-manager nothing creates a namespace's ``default`` ServiceAccount,
  and that plugin would refuse every Pod in a new namespace.

``hack/kube-up`` runs the same thing by hand (``python3 -m tests.support.controlplane``).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60.0  # the target is well under 30 s; this bounds a wedged start on a loaded machine


def kube_version() -> str:
    """The Kubernetes release hack/kube/go.mod pins."""
    for line in (ROOT / "hack" / "kube" / "go.mod").read_text().splitlines():
        words = line.removeprefix("require ").split()
        if len(words) >= 2 and words[0] == "k8s.io/kubernetes":
            return words[1]
    raise RuntimeError("hack/kube/go.mod requires no k8s.io/kubernetes")


def bin_dir() -> Path:
    """Where hack/kube-bins puts the binaries: REGCRED_KUBE_BIN_DIR, else its default cache."""
    explicit = os.environ.get("REGCRED_KUBE_BIN_DIR")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "regcred" / "kube" / kube_version() / "bin"


def missing_binaries(directory: Path | None = None) -> list[str]:
    directory = directory or bin_dir()
    return [name for name in ("etcd", "kube-apiserver") if not os.access(directory / name, os.X_OK)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Pki:
    """The control plane's certificates: one CA for serving and client certificates."""

    ca: trustme.CA
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="regcred test control plane")
        ca_file = directory / "ca.crt"
        ca.cert_pem.write_to_path(str(ca_file))
        serving = ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc")
        serving_cert, serving_key = directory / "apiserver.crt", directory / "apiserver.key"
        serving.private_key_pem.write_to_path(str(serving_key))
        for index, pem in enumerate(serving.cert_chain_pems):
            pem.write_to_path(str(serving_cert), append=index > 0)
        # The identity is the subject: CN the user, O the groups. The SAN is required by trustme.
        admin = ca.issue_cert("admin.invalid", common_name="admin", organization_name="system:masters")
        admin_cert, admin_key = directory / "admin.crt", directory / "admin.key"
        admin.cert_chain_pems[0].write_to_path(str(admin_cert))
        admin.private_key_pem.write_to_path(str(admin_key))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
        sa_private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        sa_public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(ca, ca_file, serving_cert, serving_key, admin_cert, admin_key, sa_public, sa_private)


@dataclass
class ControlPlane:
    """etcd and kube-apiserver as child processes; logs under ``workdir``."""

    workdir: Path
    binaries: Path
    pki: Pki
    etcd_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    etcd: subprocess.Popen | None = None
    apiserver: subprocess.Popen | None = None
    extra_apiserver_args: tuple[str, ...] = ()
    started_seconds: float = 0.0

    @classmethod
    def start(cls, workdir: Path, binaries: Path | None = None, *, extra_apiserver_args: tuple[str, ...] = ()
              ) -> ControlPlane:
        binaries = binaries or bin_dir()
        missing = missing_binaries(binaries)
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not in {binaries}: run hack/kube-bins")
        workdir.mkdir(parents=True, exist_ok=True)
        plane = cls(workdir, binaries, Pki.create(workdir / "pki"), extra_apiserver_args=extra_apiserver_args)
        began = time.monotonic()
        try:
            plane._start_etcd()
            plane.start_apiserver()
        except BaseException:
            plane.stop()
            raise
        plane.started_seconds = time.monotonic() - began
        plane.write_kubeconfig(workdir / "admin.kubeconfig")
        return plane

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        peer = free_port()
        self.etcd = self._spawn("etcd", [
            "--name", "regcred-test", "--data-dir", str(data),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"regcred-test=http://127.0.0.1:{peer}",
            # A test cluster: durability across a power cut is worth nothing, fsync costs seconds.
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._wait(lambda: _http_ok(f"{self.etcd_url}/health"), "etcd /health", self.etcd)

    def start_apiserver(self) -> None:
        """Start (or, after ``stop_apiserver``, restart) kube-apiserver on the same etcd and port."""
        pki = self.pki
        self.apiserver = self._spawn("kube-apiserver", [
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.api_port),
            "--cert-dir", str(self.workdir / "apiserver-certs"),
            "--tls-cert-file", str(pki.serving_cert), "--tls-private-key-file", str(pki.serving_key),
            "--client-ca-file", str(pki.ca_file),
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.0.0.0/24",
            # The kubernetes Service's endpoints would be 127.0.0.1, which the reconciler refuses.
            "--endpoint-reconciler-type", "none",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki.sa_public),
            "--service-account-signing-key-file", str(pki.sa_private),
            "--disable-admission-plugins", "ServiceAccount",
            "--audit-log-path", str(self.workdir / "audit.log"),
            "--audit-policy-file", str(self._audit_policy()),
            "--audit-log-format", "json",
            *self.extra_apiserver_args,
        ], log_name=f"kube-apiserver-{int(time.time() * 1000)}")
        self._wait(self._apiserver_ready, "kube-apiserver /readyz", self.apiserver)

    def stop_apiserver(self) -> None:
        _terminate(self.apiserver)
        self.apiserver = None

    def stop(self) -> None:
        self.stop_apiserver()
        _terminate(self.etcd)
        self.etcd = None

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- clients -----------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def request(self, method: str, path: str, body: object | None = None, *,
                content_type: str = "application/json", timeout: float = 10.0) -> dict:
        """One admin call, raw JSON in and out (``urllib.error.HTTPError`` on a non-2xx answer)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        with urllib.request.urlopen(request, context=self.ssl_context(), timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def write_kubeconfig(self, path: Path, *, token: str | None = None, user: str = "admin",
                         server: str | None = None) -> Path:
        """A kubeconfig for this API server (or ``server``, a proxy in front of it): admin's
        client certificate, or a bearer ``token``."""
        credentials = {"token": token} if token is not None else {
            "client-certificate": str(self.pki.admin_cert), "client-key": str(self.pki.admin_key)}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "regcred-test",
            "clusters": [{"name": "regcred-test", "cluster": {
                "server": server or self.url, "certificate-authority": str(self.pki.ca_file)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "regcred-test", "context": {"cluster": "regcred-test", "user": user}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, path: Path, namespace: str, name: str, *, seconds: int = 3600,
                                   server: str | None = None) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` (TokenRequest)."""
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": seconds}})
        return self.write_kubeconfig(path, token=answer["status"]["token"], user=f"{namespace}-{name}", server=server)

    # --- etcd ------------------------------------------------------------------------------------

    def compact(self) -> int:
        """Compact etcd up to its current revision, so older watches fail with 410 Gone.
        Through etcd's JSON gateway: no etcdctl is built."""
        status = _post_json(f"{self.etcd_url}/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        revision = int(status["header"]["revision"])
        _post_json(f"{self.etcd_url}/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # --- internals -------------------------------------------------------------------------------

    def _audit_policy(self) -> Path:
        """Metadata for every request: the tests count regcred's requests from the audit log."""
        path = self.workdir / "audit-policy.yaml"
        path.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
                        "rules:\n  - level: Metadata\n")
        return path

    def audit_events(self) -> list[dict]:
        path = self.workdir / "audit.log"
        if not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written as we read
        return events

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + "/readyz"), context=self.ssl_context(),
                                        timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _spawn(self, binary: str, args: list[str], *, log_name: str | None = None) -> subprocess.Popen:
        log = (self.workdir / f"{log_name or binary}.log").open("ab")
        return subprocess.Popen([str(self.binaries / binary), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, ready, what: str, process: subprocess.Popen | None) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not ready():
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{what}: the process exited with {process.returncode}; logs in {self.workdir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {STARTUP_SECONDS:.0f} s; logs in {self.workdir}")
            time.sleep(0.1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _terminate(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def main(argv: list[str] | None = None) -> int:
    """``hack/kube-up``: start the control plane, print how to use it, run until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(prog="hack/kube-up", description=main.__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".kube-up"),
                        help="working directory: certificates, etcd data, logs, kubeconfig (default: .kube-up)")
    args = parser.parse_args(argv)
    missing = missing_binaries()
    if missing:
        print(f"kube-up: {', '.join(missing)} missing in {bin_dir()}: run hack/kube-bins first", file=sys.stderr)
        return 1
    if args.dir.exists():
        shutil.rmtree(args.dir)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait below takes them
    plane = ControlPlane.start(args.dir.resolve())
    stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
    ready = f"{stamp} kube-apiserver {kube_version()} ready at {plane.url} in {plane.started_seconds:.1f} s"
    print(f"""{ready} (logs in {args.dir}/)

  export KUBECONFIG={plane.kubeconfig}
  kubectl get namespaces                       # if you have kubectl
  regcred serve --kubeconfig {plane.kubeconfig} --namespace regcred-system \\
      --registries-configmap regcred-registries --host 127.0.0.1 --port 8443

Press Ctrl-C to stop; {args.dir}/ is kept until the next start.""", flush=True)
    try:
        signal.sigwait(stop_signals)
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
