"""The gateway's side of span export: a bounded buffer the hot path drops into, and a thread that
ships batches to the export process (`gateway/telemetry/export_process.py`).

`offer` never blocks and never does more than an append: when the buffer holds `max_queue` spans,
a request's spans are dropped and counted. The shipping thread pickles a batch (C, microseconds)
and writes it to the pipe; when the export process is slow (a collector that is down, say) the
pipe fills, the thread waits there, the buffer fills, and spans are dropped, requests never wait.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import threading
from typing import Any

from gateway import metrics
from gateway.telemetry.config import TracingConfig
from gateway.telemetry.export_process import EXPORTED, FAILED, export_main

__all__ = ["SpanShipper"]

log = logging.getLogger(__name__)

TraceItem = tuple[int, str | None, int | None, list[tuple[Any, ...]]]


class SpanShipper:
    def __init__(self, config: TracingConfig):
        self.config = config
        self._buffer: collections.deque[TraceItem] = collections.deque()
        self._queued = 0  # spans in the buffer
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        mp = multiprocessing.get_context("spawn")
        self._counts = mp.Array("q", 2, lock=False)
        self._seen = [0, 0]
        receiver, self._sender = mp.Pipe(duplex=False)
        self._process = mp.Process(
            target=export_main, args=(config, receiver, self._counts), name="switchyard-trace-export", daemon=True
        )
        self._process.start()
        receiver.close()
        self._thread = threading.Thread(target=self._ship, name="switchyard-span-shipper", daemon=True)
        self._thread.start()

    def offer(self, item: TraceItem) -> None:
        """Hand over one request's spans; dropped (and counted) when the buffer is full."""
        n = len(item[3])
        with self._lock:
            if self._stopping or self._queued + n > self.config.max_queue:
                dropped = True
            else:
                dropped = False
                self._buffer.append(item)
                self._queued += n
                full = self._queued >= self.config.max_batch
        if dropped:
            metrics.labelled(metrics.SPANS_DROPPED, "queue_full").inc(n)
        elif full:
            self._wake.set()

    def _take(self) -> list[TraceItem]:
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
            self._queued = 0
        return batch

    def _ship(self) -> None:
        while True:
            self._wake.wait(self.config.schedule_delay_s)
            self._wake.clear()
            batch = self._take()
            if batch:
                try:
                    self._sender.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                except (OSError, ValueError):  # the export process is gone
                    metrics.labelled(metrics.SPANS_DROPPED, "exporter_down").inc(sum(len(i[3]) for i in batch))
                    if not self._stopping:
                        log.error("the span export process stopped; spans are dropped")
                        self._stopping = True
            self._publish()
            if self._stopping and not self._buffer:
                return

    def _publish(self) -> None:
        """The export process's counts since the last look, as metrics."""
        for slot, metric, label in (
            (EXPORTED, metrics.SPANS_EXPORTED, None),
            (FAILED, metrics.SPANS_DROPPED, "export_failed"),
        ):
            now = self._counts[slot]
            delta, self._seen[slot] = now - self._seen[slot], now
            if delta:
                (metric if label is None else metrics.labelled(metric, label)).inc(delta)

    def close(self, timeout: float = 5.0) -> None:
        """Ship what is buffered, let the export process finish, and stop it if it does not."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck writing to an export process that is stuck itself
            self._process.terminate()
            self._thread.join(1.0)
        self._sender.close()  # the export process reads what is left, then sees the end
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(1.0)
        self._publish()
