"""What the benchmarks measure with, in one place: percentiles, a process's memory and CPU, a server's
Prometheus metrics and admin endpoints, and the revision being measured.

The servers themselves are started and stopped by `bench/loadgen/processes.py`. Everything here runs
between timed phases, never on a timed path (the HTTP helpers block).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "children",
    "cpu_seconds",
    "get_json",
    "metric_total",
    "metrics_text",
    "percentile",
    "percentiles_ms",
    "post",
    "revision",
    "rss_mb",
    "run_loop",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parents[1]


# -- numbers -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float, empty: float = float("nan")) -> float:
    """The `q` quantile (0 to 1) by linear interpolation; `empty` without values."""
    if not values:
        return empty
    return float(np.percentile(np.asarray(values, dtype=float), q * 100.0))


def percentiles_ms(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float] | None:
    """Percentiles of seconds, in milliseconds: {"p50": …, "p99": …}; None without values."""
    if not values:
        return None
    a = np.percentile(np.asarray(values, dtype=float) * 1000.0, list(qs))
    return {f"p{q:g}": float(v) for q, v in zip(qs, a, strict=True)}


# -- processes (Linux /proc) ---------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def children(pid: int) -> list[int]:
    """Direct and indirect children (an engine's worker processes, say)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used so far (None where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# -- servers' admin endpoints and /metrics -------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10.0) as resp:
        return json.loads(resp.read())


def post(url: str, body: bytes = b"{}") -> None:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10.0) as resp:
        resp.read()


def metrics_text(url: str) -> str:
    """A server's /metrics page (`url` is its root)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10.0) as resp:
        return str(resp.read().decode())


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples in a Prometheus text page whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


# -- what is measured ----------------------------------------------------------------------------


def revision() -> str | None:
    """The commit the gateway runs from, `+dirty` when gateway/ differs from it (a shared checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "gateway"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a benchmark's client on uvloop (what the gateway serves on) when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
