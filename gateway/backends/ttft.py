"""Time-to-first-token prediction: recent observations plus the work already outstanding.

Each backend keeps an exponentially forgetting least-squares fit of TTFT against the number of
requests it had in flight when the request was sent: ttft ≈ a + b·outstanding. The prediction for
a new request uses the current outstanding count. Percentiles for first-token deadlines come from
a small ring of recent samples per model.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LatencyWindow", "TTFTModel"]


class TTFTModel:
    def __init__(self, half_life: int = 50, stale_after: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._decay = 0.5 ** (1.0 / half_life)
        self._stale_after = stale_after
        self._clock = clock
        self._n = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.last_sample_at: float | None = None

    def observe(self, ttft: float, outstanding_at_send: int) -> None:
        d = self._decay
        x = float(outstanding_at_send)
        self._n = self._n * d + 1.0
        self._sx = self._sx * d + x
        self._sy = self._sy * d + ttft
        self._sxx = self._sxx * d + x * x
        self._sxy = self._sxy * d + x * ttft
        self.last_sample_at = self._clock()

    @property
    def stale(self) -> bool:
        return self.last_sample_at is None or self._clock() - self.last_sample_at > self._stale_after

    def predict(self, outstanding: int) -> float | None:
        """Predicted TTFT in seconds for a request sent now, or None without data."""
        if self._n < 1e-9:
            return None
        mean_x, mean_y = self._sx / self._n, self._sy / self._n
        var = self._sxx / self._n - mean_x * mean_x
        slope = (self._sxy / self._n - mean_x * mean_y) / var if var > 1e-9 else 0.0
        if slope < 0 or math.isnan(slope):
            slope = 0.0
        # Without spread in x the slope is unknown: assume work queues linearly behind the mean.
        if var <= 1e-9 and mean_x > 0:
            slope = mean_y / (mean_x + 1.0)
        intercept = max(0.0, mean_y - slope * mean_x)
        return intercept + slope * outstanding


class LatencyWindow:
    """The last `size` samples and their percentile, recomputed at most every `every` samples."""

    def __init__(self, size: int = 256, every: int = 16):
        self._samples: deque[float] = deque(maxlen=size)
        self._every = every
        self._since = 0
        self._cache: dict[float, float] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, value: float) -> None:
        self._samples.append(value)
        self._since += 1
        if self._since >= self._every:
            self._cache.clear()
            self._since = 0

    def percentile(self, q: float) -> float | None:
        if not self._samples:
            return None
        if q not in self._cache:
            ordered = sorted(self._samples)
            self._cache[q] = ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]
        return self._cache[q]
