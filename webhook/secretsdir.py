"""Credential material for local runs: Secrets laid out on disk as Kubernetes projects them.

``DIR/<secretRef>/<key>`` is exactly what a Secret volume looks like, so the same layout
works on a laptop and with a mounted Secret. Kubernetes projects keys through ``..data``
symlinks; reading files by name follows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path


class SecretsDir:
    def __init__(self, root: Path | None):
        self._root = root

    def read(self, name: str) -> Mapping[str, bytes] | None:
        if self._root is None:
            return None
        directory = self._root / name
        if not directory.is_dir():
            return None
        return {
            entry.name: entry.read_bytes()
            for entry in directory.iterdir()
            if entry.is_file() and not entry.name.startswith(".")
        }


def missing_material(root: Path | None, secret_refs: Iterable[str]) -> list[str]:
    """What a local run will lack: one line per problem, each naming the path to create.

    Said at start-up: otherwise the first sign is an admission warning that names no path.
    """
    refs = sorted(set(secret_refs))
    if root is None:
        return [f"no --secrets-dir: the credentials of secretRef {ref} cannot be read" for ref in refs]
    if not root.is_dir():
        return [f"--secrets-dir {root} is not a directory"]
    return [f"--secrets-dir has no folder {root / ref} for secretRef {ref}" for ref in refs
            if not (root / ref).is_dir()]
