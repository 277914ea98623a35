"""The request log: one JSON object per line, per request, written by a thread off the hot path.

The hot path hands over a dict; the thread serialises it and writes it to standard output or
appends it to a file. A full queue (a disk that stalls, say) drops lines and counts them.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import IO, Any

import orjson

from gateway import metrics

__all__ = ["RequestLog"]

log = logging.getLogger(__name__)

_STOP = object()


class RequestLog:
    def __init__(self, path: str, queue_size: int):
        self.path = path
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._write, name="switchyard-request-log", daemon=True)
        self._thread.start()

    def write(self, line: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            metrics.REQUEST_LOG_DROPPED.inc()

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdout.buffer
        return open(self.path, "ab")  # held for the thread's life

    def _write(self) -> None:
        out = self._open()
        try:
            while True:
                item = self._queue.get()
                lines = [item]
                while not self._queue.empty():  # whatever else is waiting goes in the same write
                    lines.append(self._queue.get_nowait())
                stop = any(line is _STOP for line in lines)
                data = b"".join(orjson.dumps(line) + b"\n" for line in lines if line is not _STOP)
                try:
                    out.write(data)
                    out.flush()
                except (OSError, ValueError):
                    log.exception("cannot write the request log to %s", self.path)
                if stop:
                    return
        finally:
            if out is not sys.stdout.buffer:
                out.close()

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
