"""What the sim has seen, for tests: counters, cancellations, and the last N requests received.

Per process: with `--workers N` each worker keeps its own (tests run one worker).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Cancellation", "SimStats"]

_MAX_CANCELLATIONS = 1000


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A client that went away before its response was complete."""

    time: float  # wall clock, time.time()
    request_id: str
    path: str
    phase: str  # "before_first_token" or "streaming"
    chunks_sent: int


class SimStats:
    def __init__(self, keep_recent: int = 64):
        self.requests: Counter[str] = Counter()
        self.errors_injected: Counter[str] = Counter()
        self.in_flight = 0
        self.completed = 0
        self.cancellations: deque[Cancellation] = deque(maxlen=_MAX_CANCELLATIONS)
        self.cancelled = 0
        # Raw (headers, body) pairs; decoded only when someone asks, to keep the hot path cheap.
        self.recent: deque[tuple[float, str, str, list[tuple[bytes, bytes]], Any]] = deque(maxlen=keep_recent)

    def received(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: Any) -> None:
        self.requests[path] += 1
        if self.recent.maxlen:
            self.recent.append((time.time(), method, path, headers, body))

    def cancel(self, request_id: str, path: str, phase: str, chunks_sent: int) -> None:
        self.cancelled += 1
        self.cancellations.append(Cancellation(time.time(), request_id, path, phase, chunks_sent))

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "in_flight": self.in_flight,
            "completed": self.completed,
            "errors_injected": dict(self.errors_injected),
            "cancelled": self.cancelled,
            "cancellations": [
                {
                    "time": c.time,
                    "request_id": c.request_id,
                    "path": c.path,
                    "phase": c.phase,
                    "chunks_sent": c.chunks_sent,
                }
                for c in self.cancellations
            ],
            "recent": [
                {
                    "time": t,
                    "method": m,
                    "path": p,
                    "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in h},
                    "body": b,
                }
                for t, m, p, h, b in self.recent
            ],
        }
