"""A tiny OCI image layout, built with the standard library only.

Tests need *some* image to push into a real registry, and nothing can be pulled from the
internet here. One gzip tar layer holding a single small file, an image config and a manifest
are enough for ``skopeo copy oci:DIR:TAG docker://...`` and ``skopeo inspect`` to treat it as a
real image. The bytes are deterministic (fixed mtimes, no gzip timestamp), so the digests of a
layout only change when its content does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def build_oci_layout(dir: Path | str, tag: str = "1", *,
                     content: bytes = b"hello from regcred\n") -> Path:
    """Write an OCI image layout with one image tagged ``tag`` into ``dir`` and return ``dir``.

    ``content`` becomes ``/hello.txt`` in the single layer; vary it to get distinct digests.
    """
    root = Path(dir)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    layer_tar = _tar_with_file("hello.txt", content)
    # mtime=0 keeps the gzip header free of the build time, so the digest is reproducible.
    layer = gzip.compress(layer_tar, mtime=0)
    config = _json_bytes(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            # diff_ids name the *uncompressed* layers; registries do not check them, but
            # skopeo and container runtimes do when they unpack the image.
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        }
    )
    manifest = _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": _descriptor(CONFIG_MEDIA_TYPE, config),
            "layers": [_descriptor(LAYER_MEDIA_TYPE, layer)],
        }
    )
    for blob in (layer, config, manifest):
        (blobs / _digest(blob).removeprefix("sha256:")).write_bytes(blob)

    index = {
        "schemaVersion": 2,
        "manifests": [
            _descriptor(MANIFEST_MEDIA_TYPE, manifest) | {"annotations": {REF_NAME_ANNOTATION: tag}}
        ],
    }
    (root / "index.json").write_bytes(_json_bytes(index))
    (root / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))
    return root


def _tar_with_file(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
