"""What the gateway holds over a soak: RSS growth after warm-up, and (with --trace-memory or
--memory-stats) which lines and object types grew."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["grown_most", "growth", "held_over_time", "take_snapshot", "trace", "traced_environment"]


def growth(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, float]:
    """Least-squares slope of RSS after warm-up, and start/end medians of the post-warm-up run."""
    after = [(t, m) for t, m in samples if t >= warmup_s]
    if len(after) < 3:
        after = list(samples)
    times = [t for t, _ in after]
    values = [m for _, m in after]
    tenth = max(1, len(values) // 10)
    start, end = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
    mean_t, mean_m = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mean_t) ** 2 for t in times)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in zip(times, values, strict=True)) / var if var else 0.0
    return {
        "start_mb": round(start, 1),
        "end_mb": round(end, 1),
        "max_mb": round(max(m for _, m in samples), 1),
        "slope_mb_per_hour": round(slope * 3600, 2),
        "growth_pct_per_hour": round(100 * slope * 3600 / start, 2) if start else 0.0,
    }


# -- where memory goes (--trace-memory) ----------------------------------------------------------

# Loaded by the gateway process at start-up (PYTHONPATH): SIGUSR2 writes a tracemalloc snapshot,
# and a thread appends, every SOAK_STATS_SECONDS, what the process holds: RSS, the Python heap
# (tracemalloc), glibc's heap (mallinfo2: in use, free but kept) and the most common object types.
_SNAPSHOT_HOOK = """
import collections, ctypes, gc, itertools, json, os, signal, threading, time, tracemalloc
_taken = itertools.count()
def _snapshot(signum, frame):
    path = os.path.join(os.environ["SOAK_SNAPSHOT_DIR"], f"snapshot-{next(_taken)}.pickle")
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR2, _snapshot)

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
def _stats():
    libc = ctypes.CDLL(None)
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = _Mallinfo2
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        time.sleep(float(os.environ["SOAK_STATS_SECONDS"]))
        if os.environ.get("SOAK_MALLOC_TRIM") == "1":  # diagnosis: is the growth free memory glibc keeps?
            libc.malloc_trim(0)
        row = {"t": time.time(), "pid": os.getpid(), "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20}
        with open("/proc/self/statm") as f:
            row["rss_mb"] = int(f.read().split()[1]) * page / 2**20
        if mallinfo2 is not None:
            info = mallinfo2()
            row["malloc_in_use_mb"] = (info.uordblks + info.hblkhd) / 2**20
            row["malloc_free_kept_mb"] = info.fordblks / 2**20
            row["malloc_mmapped_mb"] = info.hblkhd / 2**20
        row["types"] = dict(collections.Counter(type(o).__qualname__ for o in gc.get_objects()).most_common(40))
        with open(os.path.join(os.environ["SOAK_SNAPSHOT_DIR"], "stats.jsonl"), "a") as out:
            out.write(json.dumps(row) + "\\n")
if os.environ.get("SOAK_STATS_SECONDS"):
    threading.Thread(target=_stats, daemon=True, name="soak-stats").start()
"""


@contextlib.contextmanager
def traced_environment(directory: Path, tracemalloc: bool = True) -> Iterator[None]:
    """Environment for the gateway process: tracemalloc on, and the snapshot hook importable."""
    (directory / "sitecustomize.py").write_text(_SNAPSHOT_HOOK)
    patch = {
        "PYTHONTRACEMALLOC": "1" if tracemalloc else "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")])),
        "SOAK_SNAPSHOT_DIR": str(directory),
        "SOAK_STATS_SECONDS": "30",
    }
    saved = {k: os.environ.get(k) for k in patch}
    os.environ.update(patch)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def take_snapshot(pid: int, directory: Path, index: int) -> Path:
    path = directory / f"snapshot-{index}.pickle"
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while True:
        if path.exists():
            return path
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway wrote no {path.name}")
        await asyncio.sleep(0.2)  # polling: the gateway writes it between two requests


def grown_most(before: Path, after: Path, top: int = 15) -> list[str]:
    """Source lines whose live allocations grew most between two snapshots."""
    import tracemalloc

    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib.*"),
    ]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    out = []
    for stat in new.compare_to(old, "lineno")[:top]:
        frame = stat.traceback[0]
        name = os.path.relpath(frame.filename.split("site-packages/")[-1])
        out.append(f"{name}:{frame.lineno} {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks)")
    return out


def held_over_time(directory: Path, pid: int, since: float) -> dict[str, Any]:
    """What the stats thread saw: each figure at the first sample after `since` (wall clock: the
    end of warm-up) and at the last, and the object types whose count grew most between them."""
    path = directory / "stats.jsonl"
    if not path.exists():
        return {}
    rows = [row for line in path.read_text().splitlines() if (row := json.loads(line))["pid"] == pid]
    if not rows:  # the engine's workers inherit the hook; only the gateway's own rows count
        return {}
    after = [r for r in rows if r["t"] >= since] or rows
    first, last = after[0], after[-1]
    figures = [k for k in first if k.endswith("_mb")]
    grown = {k: last["types"].get(k, 0) - first["types"].get(k, 0) for k in last["types"]}
    return {
        "minutes": round((last["t"] - first["t"]) / 60, 1),
        **{k: [round(first[k], 1), round(last[k], 1)] for k in figures},
        "types_grown": dict(sorted(((k, v) for k, v in grown.items() if v), key=lambda kv: -kv[1])[:10]),
    }


def trace(samples: list[tuple[float, float]], elapsed: float) -> list[float]:
    """The gateway's RSS at twenty points of the run (the median of each twentieth)."""
    out = []
    for i in range(20):
        part = [m for t, m in samples if i * elapsed / 20 <= t < (i + 1) * elapsed / 20]
        if part:
            out.append(round(statistics.median(part), 1))
    return out
