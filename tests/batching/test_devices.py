"""Device selection and KV sizing: the CUDA path's arithmetic, exercised without a GPU."""

from __future__ import annotations

import pytest

from batching.devices import cpu_flags, default_cpu_dtype, normalize_device, resolve_devices, torch_threads_for
from batching.memory import (
    ModelShape,
    cuda_kv_budget_bytes,
    forward_reserve_bytes,
    kv_blocks_for_budget,
    kv_bytes_per_token,
)

MIB = 1 << 20
GIB = 1 << 30
SMOLLM2 = ModelShape(num_layers=30, hidden_size=576, intermediate_size=1536, num_heads=9, num_kv_heads=3,
                     head_dim=64, vocab_size=49152, dtype_bytes=4)

RESOLVE = [
    ("auto without a GPU is the CPU", "auto", 0, ["cpu"]),
    ("auto takes every GPU", "auto", 2, ["cuda:0", "cuda:1"]),
    ("explicit CPU workers may repeat", ["cpu", "cpu"], 0, ["cpu", "cpu"]),
    ("cuda means cuda:0", ["cuda"], 1, ["cuda:0"]),
    ("a mix", ["cuda:1", "cpu"], 2, ["cuda:1", "cpu"]),
]


@pytest.mark.parametrize(("case", "spec", "count", "expected"), RESOLVE, ids=[c[0] for c in RESOLVE])
def test_resolve_devices(case: str, spec: str | list[str], count: int, expected: list[str]) -> None:
    assert resolve_devices(spec, count) == expected


RESOLVE_ERRORS = [
    (["cuda:1"], 1, "1 CUDA device"),
    (["cuda:0", "cuda"], 1, "one worker"),
    ([], 0, "empty"),
    (["tpu"], 0, "not 'cpu'"),
]


@pytest.mark.parametrize(("spec", "count", "message"), RESOLVE_ERRORS)
def test_resolve_devices_errors(spec: list[str], count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_devices(spec, count)


def test_normalize_device() -> None:
    assert [normalize_device(d) for d in ("cpu", "cuda", "cuda:3")] == ["cpu", "cuda:0", "cuda:3"]


THREADS = [
    ("one CPU worker takes every core", "cpu", ["cpu"], 16, None, 16),
    ("CPU workers split the cores", "cpu", ["cpu", "cpu"], 2, None, 1),
    ("never zero", "cpu", ["cpu"] * 4, 2, None, 1),
    ("a GPU worker needs few host threads", "cuda:0", ["cuda:0", "cuda:1"], 16, None, 2),
    ("the setting wins", "cpu", ["cpu"], 16, 3, 3),
]


@pytest.mark.parametrize(("case", "device", "devices", "cpus", "override", "expected"), THREADS,
                         ids=[c[0] for c in THREADS])
def test_torch_threads(case: str, device: str, devices: list[str], cpus: int, override: int | None,
                       expected: int) -> None:
    assert torch_threads_for(device, devices, cpus, override) == expected


def test_kv_bytes_per_token_of_smollm2() -> None:
    assert kv_bytes_per_token(SMOLLM2) == 2 * 30 * 3 * 64 * 4 == 46080


CUDA_BUDGETS = [
    # free, total, utilization, reserve → KV budget
    ("an idle 80 GiB GPU with 1 GiB of weights", 79 * GIB, 80 * GIB, 0.9, GIB, 70 * GIB),
    ("memory used by others counts against the utilization", 40 * GIB, 80 * GIB, 0.9, GIB, 31 * GIB),
    ("utilization 1 hands over everything free but the reserve", 10 * GIB, 16 * GIB, 1.0, GIB, 9 * GIB),
]


@pytest.mark.parametrize(("case", "free", "total", "util", "reserve", "expected"), CUDA_BUDGETS,
                         ids=[c[0] for c in CUDA_BUDGETS])
def test_cuda_kv_budget(case: str, free: int, total: int, util: float, reserve: int, expected: int) -> None:
    assert cuda_kv_budget_bytes(free, total, util, reserve) == expected


def test_cuda_kv_budget_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="no GPU memory left"):
        cuda_kv_budget_bytes(GIB, 16 * GIB, 0.5, 0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        cuda_kv_budget_bytes(GIB, 16 * GIB, 1.5, 0)


def test_sizing_smollm2_on_an_h100() -> None:
    reserve = forward_reserve_bytes(SMOLLM2, max_num_batched_tokens=512, max_num_seqs=32, max_model_len=2048)
    assert 256 * MIB < reserve < 4 * GIB
    budget = cuda_kv_budget_bytes(79 * GIB, 80 * GIB, 0.85, reserve)
    blocks = kv_blocks_for_budget(budget, 16, kv_bytes_per_token(SMOLLM2))
    assert blocks * 16 * kv_bytes_per_token(SMOLLM2) <= budget
    assert blocks * 16 > 1_000_000  # over a million tokens of context on an idle H100


def test_blocks_for_the_cpu_default() -> None:
    assert kv_blocks_for_budget(1024 * MIB, 16, kv_bytes_per_token(SMOLLM2)) == 1456


# -- the default CPU dtype -----------------------------------------------------------------------

CPUINFO_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
CPUINFO_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile\n"
CPUINFO_AMX = "processor\t: 0\nflags\t\t: avx2 avx512f amx_bf16 amx_tile\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"

DEFAULT_DTYPES = [
    ("AVX2 only: bfloat16 would be emulated", CPUINFO_AVX2, "float32"),
    ("AVX512-BF16", CPUINFO_BF16, "bfloat16"),
    ("AMX", CPUINFO_AMX, "bfloat16"),
    ("no flags line", "processor\t: 0\n", "float32"),
    ("an Arm CPU's features are not x86 flags", CPUINFO_ARM, "float32"),
]


@pytest.mark.parametrize(("case", "cpuinfo", "dtype"), DEFAULT_DTYPES, ids=[c[0] for c in DEFAULT_DTYPES])
def test_default_cpu_dtype(case: str, cpuinfo: str, dtype: str) -> None:
    chosen, why = default_cpu_dtype(cpu_flags(cpuinfo))
    assert chosen == dtype, case
    assert why  # the reason is logged and shown in /readyz
