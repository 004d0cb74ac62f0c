"""Loaded into ``regcred serve`` by bench/churn.py (PYTHONPATH): what its allocators hold.

VmRSS mixes what Python's objects hold with the room its allocators keep after a peak, which
CPython never gives back. On SIGUSR1 this writes, as JSON to ``$REGCRED_BENCH_MEMPROBE``,
after a full collection:

* ``blocks``: blocks allocated in Python's small-object allocator (``sys.getallocatedblocks``);
* ``malloc_in_use`` and ``malloc_free``: bytes glibc's malloc has handed out and holds free
  (``mallinfo2``: large objects, C libraries, and the fragmentation between them).

A benchmark instrument only: regcred itself never imports it.
"""

import ctypes
import gc
import json
import os
import signal
import sys

_PATH = os.environ.get("REGCRED_BENCH_MEMPROBE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _report(signum, frame):
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    figures = {"blocks": sys.getallocatedblocks(), "malloc_in_use": info.uordblks + info.hblkhd,
               "malloc_free": info.fordblks}
    with open(_PATH + ".tmp", "w") as out:
        json.dump(figures, out)
    os.replace(_PATH + ".tmp", _PATH)


if _PATH:
    signal.signal(signal.SIGUSR1, _report)
