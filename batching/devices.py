"""Which devices get a worker and how many CPU threads each worker's torch may use."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

__all__ = ["cpu_flags", "default_cpu_dtype", "normalize_device", "resolve_devices", "torch_threads_for"]

# CPU features with native bfloat16 matrix arithmetic; without them torch emulates bfloat16 through
# float32 conversions and a bfloat16 forward is slower than a float32 one.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

_CUDA = re.compile(r"cuda(?::(\d+))?")


def normalize_device(device: str) -> str:
    """'cpu', 'cuda' (→ 'cuda:0') or 'cuda:N'; `ValueError` for anything else."""
    if device == "cpu":
        return "cpu"
    match = _CUDA.fullmatch(device)
    if match is None:
        raise ValueError(f"device {device!r} is not 'cpu', 'cuda' or 'cuda:N'")
    return f"cuda:{int(match.group(1) or 0)}"


def resolve_devices(spec: Literal["auto"] | Sequence[str], cuda_count: int) -> list[str]:
    """One worker per entry: 'auto' takes every visible GPU, or the CPU when there is none.

    Several 'cpu' entries are allowed (they split the cores); a GPU may appear only once.
    """
    if spec == "auto":
        return [f"cuda:{i}" for i in range(cuda_count)] or ["cpu"]
    devices = [normalize_device(d) for d in spec]
    if not devices:
        raise ValueError("devices is empty; use 'auto' or a list such as ['cpu'] or ['cuda:0']")
    for device in devices:
        if device != "cpu" and int(device.split(":")[1]) >= cuda_count:
            raise ValueError(f"device {device} requested but {cuda_count} CUDA device(s) are visible")
    gpus = [d for d in devices if d != "cpu"]
    if len(gpus) != len(set(gpus)):
        raise ValueError(f"each CUDA device may have one worker, got {devices}")
    return devices


def torch_threads_for(device: str, devices: Sequence[str], cpu_count: int, override: int | None) -> int:
    """CPU workers split the cores evenly; a GPU worker needs few host threads."""
    if override is not None:
        return override
    if device == "cpu":
        return max(1, cpu_count // sum(1 for d in devices if d == "cpu"))
    return max(1, min(2, cpu_count))


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first CPU in a `/proc/cpuinfo` text (empty when there are none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def default_cpu_dtype(flags: frozenset[str]) -> tuple[str, str]:
    """The CPU's default dtype and why: bfloat16 where the CPU computes it natively, else float32.
    bfloat16's greedy path parts from float32's after some tokens but gives the same answers on the
    bundled model (`tests/batching/test_smollm2.py` holds it to that; `bench/engine.py` times both)."""
    native = [f for f in _BF16_FLAGS if f in flags]
    if native:
        return "bfloat16", f"the CPU has {', '.join(native)}"
    return "float32", f"the CPU has none of {', '.join(_BF16_FLAGS)} (bfloat16 would be emulated, slower)"
