"""Load shapes, decided without I/O: arrival gaps for a target rate, and ladders for sweeps.

A sweep climbs a coarse geometric ladder until a step breaks the SLO, then adds finer steps between
the last step that held and the first that broke, where the interesting behaviour is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Arrival", "Load", "arrival_gaps", "coarse_ladder", "refine_ladder", "step_holds"]

Arrival = Literal["poisson", "gamma", "constant"]


@dataclass(frozen=True, slots=True)
class Load:
    """One step of load: a fixed concurrency (closed loop) or a request rate (open loop)."""

    mode: Literal["concurrency", "rate"]
    value: float
    arrival: Arrival = "poisson"
    burstiness: float = 1.0  # gamma: coefficient of variation of the gaps (1 = Poisson, >1 = bursty)

    @property
    def label(self) -> str:
        return f"c={self.value:g}" if self.mode == "concurrency" else f"rate={self.value:g}/s"


def arrival_gaps(rate: float, arrival: Arrival, rng: random.Random, burstiness: float = 1.0) -> Iterator[float]:
    """Seconds between consecutive arrivals, averaging 1/`rate`."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrival == "constant":
        while True:
            yield 1.0 / rate
    elif arrival == "poisson":
        while True:
            yield rng.expovariate(rate)
    else:
        shape = 1.0 / (burstiness * burstiness)  # CV of a gamma is 1/sqrt(shape)
        scale = 1.0 / (rate * shape)
        while True:
            yield rng.gammavariate(shape, scale)


def coarse_ladder(start: float, factor: float, limit: float) -> list[float]:
    """start, start·factor, … up to `limit` (inclusive), e.g. 1, 2, 4, 8."""
    if start <= 0 or factor <= 1:
        raise ValueError("a ladder needs start > 0 and factor > 1")
    steps, v = [], start
    while v <= limit * (1 + 1e-9):
        steps.append(v)
        v *= factor
    return steps


def refine_ladder(good: float, bad: float, count: int, integer: bool) -> list[float]:
    """`count` evenly spaced steps strictly between the last good and the first bad load."""
    out = []
    for i in range(1, count + 1):
        v = good + (bad - good) * i / (count + 1)
        out.append(float(round(v)) if integer else round(v, 3))
    return sorted({v for v in out if good < v < bad})


def step_holds(
    summary: dict[str, Any],
    previous: dict[str, Any] | None,
    min_good_fraction: float = 0.9,
    max_error_rate: float = 0.05,
    min_gain: float = 0.05,
) -> bool:
    """Whether a sweep step is still below saturation.

    With an SLO: enough requests met it. Without: few errors and throughput still growing by at
    least `min_gain` over the previous step.
    """
    if summary["error_rate"] > max_error_rate:
        return False
    goodput = summary.get("goodput")
    if goodput is not None:
        return bool(goodput["fraction"] >= min_good_fraction)
    if previous is None:
        return True
    before = previous["throughput"]["requests_per_s"]
    return bool(summary["throughput"]["requests_per_s"] >= before * (1 + min_gain))
