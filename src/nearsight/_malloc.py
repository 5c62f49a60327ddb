"""glibc ``malloc`` settings for tensor-heavy work.

glibc serves blocks above its mmap threshold (128 KiB at start, raised adaptively up to
32 MiB) with fresh ``mmap`` calls and returns the top of its heap to the system beyond
its trim threshold.  PyTorch's CPU tensors of 0.1 to 30 MB, allocated and freed by the
thousand in a forward and backward pass, then page-fault on every first touch: measured
here, a descriptor forward pass on 3000 water atoms ran 3x slower for it (the issue
MACE users see as poor scaling and fix with tcmalloc).  :func:`tune_malloc` sets both
thresholds so such blocks are reused from the heap: resident memory stays at the
process's peak instead of shrinking between steps.

``import nearsight`` calls it once; set ``NEARSIGHT_MALLOC_TUNING=0`` to keep glibc's
defaults.  Elsewhere than glibc (macOS, musl, a preloaded tcmalloc/jemalloc) it changes
nothing that matters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest adaptive value: bigger blocks are still mapped
TRIM_THRESHOLD = 1 << 30

_tuned: bool | None = None


def tune_malloc(force: bool = False) -> bool:
    """Raise glibc's mmap and trim thresholds; True if they were set (once per process)."""
    global _tuned
    if _tuned is not None and not force:
        return _tuned
    _tuned = False
    if os.environ.get("NEARSIGHT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _tuned
