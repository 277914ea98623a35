"""Process-wide allocator tuning for the worker: keep large freed blocks instead of unmapping them.

glibc serves allocations above its mmap threshold (128 KiB to 32 MiB, adaptive) with fresh pages,
so every gathered KV tensor and activation of a forward page-faults its way in; on a small CPU that
costs as much as the attention itself. Raising the thresholds makes the heap reuse that memory: the
resident size grows to one forward's peak once and then stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """True when the tuning applied (glibc on Linux); elsewhere a no-op that returns False."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
