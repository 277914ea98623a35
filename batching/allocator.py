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
from typing import Any

__all__ = ["keep_freed_memory", "return_free_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """True when the tuning applied (glibc on Linux); elsewhere a no-op that returns False."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))


def return_free_memory() -> bool:
    """Give the heap's free pages back to the system (after loading, before the tuning above)."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def _libc_function(symbol: str) -> Any:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), symbol)
    except (OSError, AttributeError):
        return None  # not glibc (musl has neither)
