"""Polling file watcher for local files and mounted Secret/ConfigMap volumes.

Kubernetes updates projected volumes by swapping a ``..data`` symlink, which inotify
watchers on the file itself miss; comparing ``stat`` results (which follow symlinks) on a
short interval sees every update and costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def fingerprint(paths: Iterable[Path]) -> tuple[tuple[str, *tuple[object, ...]], ...]:
    """What changes when any of ``paths`` (files, or directories walked) changes."""
    marks: list[tuple[str, *tuple[object, ...]]] = []
    for path in paths:
        for file in _files(path):
            try:
                stat = file.stat()
            except OSError:
                marks.append((str(file), None))
                continue
            marks.append((str(file), stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(sorted(marks, key=lambda mark: mark[0]))


def _files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    found = []
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith("..")]  # skip the volume's ..data twins
        found += [Path(root) / name for name in files if not name.startswith(".")]
    return found


async def watch(paths: list[Path], on_change: Callable[[], object], *, interval: float = 2.0,
                call_now: bool = False) -> None:
    """Call ``on_change`` whenever ``paths`` change (and first, with ``call_now``); runs until cancelled.

    The first fingerprint is taken before the first call, so a change landing while that
    call runs is still seen.
    """
    last = await asyncio.to_thread(fingerprint, paths)
    if call_now:
        await asyncio.to_thread(on_change)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(fingerprint, paths)
        if current != last:
            last = current
            try:
                on_change()
            except Exception:
                log.exception("reacting to a file change failed", extra={"paths": [str(p) for p in paths]})
