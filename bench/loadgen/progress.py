"""The live progress line: done, errors, in flight, request rate and recent TTFT, on stderr."""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from bench.loadgen.record import RequestRecord

__all__ = ["ProgressLine"]


class ProgressLine:
    """Rewrites one line in a terminal; prints a line every few seconds when not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._last_print = -1e9

    def __call__(self, records: list[RequestRecord], in_flight: int, elapsed: float, label: str) -> None:
        if not self.tty and elapsed - self._last_print < 5.0:
            return
        self._last_print = elapsed
        done = len(records)
        errors = sum(r.error is not None for r in records)
        recent = [r.ttft for r in records[-500:] if r.ttft is not None]
        ttft = f"{np.median(recent) * 1000:7.1f} ms" if recent else "     -"
        line = (
            f"[{label}] {elapsed:6.1f}s  done {done:7d}  err {errors:5d}  in-flight {in_flight:5d}  "
            f"{done / max(elapsed, 1e-9):8.1f} req/s  ttft p50 {ttft}"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
