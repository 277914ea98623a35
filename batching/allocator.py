"""Process-wide glibc allocator tuning, one setting for each kind of process.

glibc serves allocations above its mmap threshold with pages of their own and unmaps them on free.
The threshold starts at 128 KiB and is adaptive: each time such a block is freed, it rises to that
block's size (up to 32 MiB), and from then on blocks that size come from the heap instead.

- The engine's worker (`keep_freed_memory`): every gathered KV tensor and activation of a forward
  would page-fault its way in; on a small CPU that costs as much as the attention itself. Raising
  the thresholds makes the heap reuse that memory: the resident size grows to one forward's peak
  once and then stays flat, because a forward allocates the same shapes again and again.
- The gateway (`unmap_large_blocks`): the embedder's forwards allocate tensors of a different size
  for every batch and text length, between the request path's long-lived small objects. Once the
  adaptive threshold has risen they land in the heap, and their freed holes, pinned by live small
  blocks above them, are never trimmed: the heap's free-but-kept memory grows for hours while the
  memory in use stays flat. A fixed threshold keeps those tensors out of the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

__all__ = ["keep_freed_memory", "return_free_memory", "unmap_large_blocks"]

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


def unmap_large_blocks(threshold: int = 128 * 1024) -> bool:
    """Fix the mmap threshold at `threshold` bytes (glibc's starting value by default): larger
    blocks always get pages of their own, returned to the system on free. Setting it also turns off
    the adaptive trim threshold, which stays at glibc's default. True when it applied (glibc)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


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
