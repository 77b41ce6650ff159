"""Keep the process heap close to what it holds live during a sync.

A sync allocates and frees page bodies of 100 KB to a few MB many thousands of times, from
the event loop and the staging thread. glibc serves blocks above its mmap threshold with their
own mapping, returned to the system on free, but it raises that threshold to the size of each
mapped block it frees (up to 32 MB): after the first few pages every body comes from the heap
instead, where freed pages fragment it and stay resident. Measured on a first sync of a million
records, the fetch's process held 300-400 MB more than its live Python objects (tracemalloc)
that way. A fixed threshold keeps large blocks mapped, and two arenas keep the threads from
each growing a heap of their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 2**10
ARENA_MAX = 2

_tuned = False


def return_large_blocks_promptly() -> bool:
    """Fix glibc's mmap threshold and arena count for this process (once; later calls do
    nothing). False where the C library is not glibc: the defaults stay, nothing breaks."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX)
    )
    if not _tuned:
        log.debug("mallopt refused the heap settings; glibc's defaults stay")
    return _tuned
