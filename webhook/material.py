"""Credential material for local runs: Secrets laid out on disk as Kubernetes projects them.

``DIR/<secretRef>/<key>`` is exactly what a Secret volume looks like, so the same layout
works on a laptop and with a mounted Secret. Kubernetes projects keys through ``..data``
symlinks; reading files by name follows them.
"""

from __future__ import annotations

from collections.abc import Mapping
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
