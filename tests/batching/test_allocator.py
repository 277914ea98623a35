"""The allocator settings do what batching/allocator.py says, read from glibc's own counters."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Frees a 1 MiB block (glibc then raises its adaptive mmap threshold), allocates another, and prints
# whether that one got pages of its own (mallinfo2's hblkhd: bytes in mmapped blocks).
_PROBE = """
import ctypes, sys
from batching.allocator import unmap_large_blocks
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert unmap_large_blocks()
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd - before >= 1 << 20)
libc.free(block)
"""


def _second_block_mmapped(mode: str) -> bool:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip() == "True"


def test_adaptive_threshold_moves_a_freed_size_into_the_heap_and_a_fixed_one_does_not() -> None:
    assert not _second_block_mmapped("adaptive")  # glibc's default: the heap serves it now
    assert _second_block_mmapped("fixed")  # unmap_large_blocks: pages of its own, unmapped on free
