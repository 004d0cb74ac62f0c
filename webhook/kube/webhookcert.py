"""The webhook's own certificate in a cluster (``tls.mode: managed``): kept in a Secret, served by
every replica, trusted through the MutatingWebhookConfiguration's ``caBundle``.

Every ``interval``:

* the leader reads the Secret and its webhook configuration, asks ``certauthority.plan`` what
  the Secret should hold, writes it when that differs (create, or replace carrying the
  resourceVersion: a conflict waits for the next round), and patches ``caBundle`` only when it
  differs, so a restart that finds a valid Secret changes nothing;
* every replica (the leader too) reads the Secret and, when the serving pair changed, writes
  it to ``--tls-cert``/``--tls-key`` with a rename, where the file watch reloads it into the
  live TLS context without dropping connections; then it checks that the ``caBundle`` the API
  server holds verifies the certificate it serves (a readiness condition).

A new CA is used to sign only once the API server's bundle has held it for ``settle`` seconds:
the API server reads webhook configurations through its own watch, so a bundle just patched
is not yet the bundle every API server uses. Reading with ``get`` by name (never a watch)
keeps RBAC to ``get``/``update`` of one Secret and ``get``/``patch`` of one configuration.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes.client import AdmissionregistrationV1Api, ApiException

from webhook.app import Readiness
from webhook.certauthority import Material, Policy, fingerprint, parse_bundle, plan, verifies
from webhook.certs import TlsFiles
from webhook.jsontypes import JsonObject
from webhook.kube.client import KubeClient, describe_api_error

log = logging.getLogger(__name__)

VERIFIES = "webhook caBundle verifies the certificate"


class WebhookCertController:
    def __init__(self, client: KubeClient, *, namespace: str, secret: str, webhook: str | None, policy: Policy,
                 files: TlsFiles, readiness: Readiness, is_leader: Callable[[], bool], interval: float,
                 settle: float, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._admission = AdmissionregistrationV1Api(client.api)
        self._namespace = namespace
        self._secret = secret
        self._webhook = webhook
        self._policy = policy
        self._files = files
        self._readiness = readiness
        self._is_leader = is_leader
        self._interval = interval
        self._settle = settle
        self._now = now
        self._clock = clock
        self._seen: dict[str, float] = {}  # CA fingerprint -> when first seen in the API server's bundle
        self._served: tuple[bytes, bytes] | None = None
        self._wake = asyncio.Event()
        self.loaded = asyncio.Event()  # the serving pair is on disk: the listeners may start
        self.patches = 0
        self.verified = webhook is None
        if webhook is not None:
            readiness.set(VERIFIES, False)

    def wake(self) -> None:
        """Run a round now (leadership acquired)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.round()
            except Exception as exc:  # an unreachable API server: the served certificate stays
                log.warning("webhook certificate round failed", extra={"error": describe_api_error(exc)})
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            # Not ready yet (no certificate, or a bundle that does not verify it): look again soon.
            interval = self._interval if self.verified else min(self._interval, 1.0)
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def round(self) -> None:
        secret = await self._read_secret()
        configuration = await self._read_configuration()
        if self._is_leader():
            patches = self.patches
            secret = await self._lead(secret, configuration)
            if self.patches != patches:
                configuration = await self._read_configuration()  # what the API server holds now
        material = Material.from_data(_decoded(secret)) if secret is not None else None
        if material is None:
            self.verified = False
            return  # the leader has not made it yet
        self._serve(material)
        if configuration is not None:
            trusted = parse_bundle(_bundle_of(configuration))
            self.verified = verifies(material.serving, trusted, self._now())
            self._readiness.set(VERIFIES, self.verified)

    # ---- the leader

    async def _lead(self, secret: JsonObject | None, configuration: JsonObject | None) -> JsonObject | None:
        current = Material.from_data(_decoded(secret)) if secret is not None else None
        trusted = False
        if current is not None and configuration is not None:
            in_bundle = {fingerprint(ca) for ca in parse_bundle(_bundle_of(configuration))}
            now = self._clock()
            self._seen = {fp: self._seen.get(fp, now) for fp in in_bundle}
            seen = self._seen.get(fingerprint(current.ca))
            trusted = seen is not None and now - seen >= self._settle
        desired = plan(current, self._policy, now=self._now(), ca_trusted=trusted)
        if desired != current:
            secret = await self._write(secret, desired, current)
            if secret is None:
                return None
        if configuration is not None and self._webhook is not None:
            await self._patch_bundle(configuration, desired.bundle)
        return secret

    async def _write(self, secret: JsonObject | None, desired: Material, current: Material | None) -> JsonObject | None:
        body: JsonObject = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                            "metadata": {"name": self._secret, "namespace": self._namespace,
                                         "labels": {"app.kubernetes.io/managed-by": "regcred"}},
                            "data": {key: base64.b64encode(value).decode() for key, value in desired.as_data().items()}}
        try:
            if secret is None:
                written = await self._client.call_json(self._client.core.create_namespaced_secret,
                                                       self._namespace, body)
            else:
                body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                written = await self._client.call_json(self._client.core.replace_namespaced_secret,
                                                       self._secret, self._namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another leader, or a stale read: the next round reads again
                return None
            raise
        what = ("created" if current is None else "CA rotated" if current.ca_cert != desired.ca_cert
                else "serving certificate renewed" if current.tls_cert != desired.tls_cert else "CA bundle trimmed")
        log.info("webhook certificate %s", what, extra={"secret": f"{self._namespace}/{self._secret}",
                                                        "expires": desired.serving.not_valid_after_utc.isoformat()})
        return written

    async def _patch_bundle(self, configuration: JsonObject, bundle: bytes) -> None:
        wanted = base64.b64encode(bundle).decode()
        ops = []
        for index, hook in enumerate(configuration.get("webhooks") or []):
            if (hook.get("clientConfig") or {}).get("caBundle") != wanted:
                # test the name first: the list may have been reordered since the read
                ops += [{"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]},
                        {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}]
        if not ops:
            return
        await self._client.call_json(self._admission.patch_mutating_webhook_configuration, self._webhook, ops)
        self.patches += 1
        log.info("webhook caBundle updated", extra={"configuration": self._webhook})

    # ---- every replica

    def _serve(self, material: Material) -> None:
        pair = (material.tls_cert, material.tls_key)
        if pair != self._served:
            _replace(self._files.key, material.tls_key, 0o600)
            _replace(self._files.cert, material.tls_cert, 0o644)
            self._served = pair
        self.loaded.set()

    async def _read_secret(self) -> JsonObject | None:
        try:
            return await self._client.call_json(self._client.core.read_namespaced_secret, self._secret,
                                                self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _read_configuration(self) -> JsonObject | None:
        if self._webhook is None:
            return None
        try:
            return await self._client.call_json(self._admission.read_mutating_webhook_configuration, self._webhook)
        except ApiException as exc:
            if exc.status == 404:
                log.warning("webhook configuration not found; its caBundle cannot be kept current",
                            extra={"configuration": self._webhook})
                return None
            raise


def _decoded(secret: JsonObject) -> dict[str, bytes]:
    try:
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
    except ValueError:
        return {}


def _bundle_of(configuration: JsonObject) -> bytes:
    """The CAs every webhook of the configuration trusts (the API server checks each separately)."""
    hooks = configuration.get("webhooks") or []
    bundles = [base64.b64decode((hook.get("clientConfig") or {}).get("caBundle") or "") for hook in hooks]
    return bundles[0] if bundles and all(b == bundles[0] for b in bundles) else b""


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write beside, then rename: the file watch never reads half a certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)
