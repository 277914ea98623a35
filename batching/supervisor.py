"""Process supervision for the pool: start one worker process per device, watch it, restart it.

`WorkerSupervisor` owns the worker slots (`WorkerSlot`): it spawns each process with its inbox queue
and result pipe, runs one reader thread per process that forwards messages to the event loop, and
when a process ends tells the pool (`on_exit`) and restarts it with exponential back-off. It knows
nothing of requests: the pool dispatches work to ready slots and handles what they send back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any, Literal

from batching import metrics
from batching.messages import IterationStats, Shutdown, WorkerInfo
from batching.worker import WorkerSpec, worker_main

__all__ = ["WorkerSlot", "WorkerSupervisor", "describe_exit"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 30.0

WorkerState = Literal["starting", "ready", "dead", "stopped"]


@dataclass(eq=False)
class WorkerSlot:
    """One device's slot; its process and channels are replaced when it is restarted."""

    index: int
    device: str
    threads: int
    generation: int = 0
    state: WorkerState = "starting"
    process: BaseProcess | None = None
    inbox: Queue[Any] | None = None
    reader: threading.Thread | None = None
    ready: asyncio.Future[WorkerInfo] | None = None
    info: WorkerInfo | None = None
    stats: IterationStats | None = None
    failure: str | None = None
    outstanding: set[int] = field(default_factory=set)
    restarts: int = 0
    failures_in_row: int = 0

    @property
    def kv_used_fraction(self) -> float:
        if self.info is None or self.stats is None:
            return 0.0
        return self.stats.num_kv_blocks_used / self.info.num_kv_blocks

    def send(self, message: object) -> None:
        if self.inbox is not None and self.state in ("starting", "ready"):
            self.inbox.put(message)


class WorkerSupervisor:
    """`on_message(slot, message)` and `on_exit(slot, exitcode)` run on the event loop, only for the
    slot's current process (messages of a process already replaced are dropped)."""

    def __init__(
        self,
        spec_for: Callable[[WorkerSlot], WorkerSpec],
        on_message: Callable[[WorkerSlot, object], None],
        on_exit: Callable[[WorkerSlot, int | None], None],
        model_name: str,
        restart_backoff_s: float,
    ):
        self._spec_for = spec_for
        self._on_message = on_message
        self._on_exit = on_exit
        self._model = model_name
        self._backoff = restart_backoff_s
        self._ctx = mp.get_context("spawn")  # fork would copy the event loop's threads and locks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.slots: list[WorkerSlot] = []
        self.closing = False
        # Set once the pool has started: a failure during start-up fails `start()` instead.
        self.restart_on_exit = False

    async def start(self, slots: list[WorkerSlot]) -> None:
        self._loop = asyncio.get_running_loop()
        self.slots = slots
        for slot in slots:
            await self._spawn(slot)

    async def wait_started(self, timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in self.slots if s.ready is not None)), timeout)

    def mark_ready(self, slot: WorkerSlot, info: WorkerInfo) -> None:
        slot.info = info
        slot.state = "ready"
        slot.failures_in_row = 0
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_result(info)

    async def stop(self) -> None:
        """Ask every worker to exit, kill those that do not within a few seconds."""
        self.closing = True
        for task in self._tasks:
            task.cancel()
        for slot in self.slots:
            slot.send(Shutdown())
        await asyncio.to_thread(self._stop_processes)
        for slot in self.slots:
            slot.state = "stopped"
            if slot.inbox is not None:
                slot.inbox.cancel_join_thread()
                slot.inbox.close()

    def _stop_processes(self) -> None:
        # Each reader thread reaps its own process; waiting on the readers avoids a second waitpid.
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        for slot in self.slots:
            if slot.reader is None:
                continue
            slot.reader.join(max(0.0, deadline - time.monotonic()))
            if slot.reader.is_alive() and slot.process is not None:
                slot.process.kill()
                slot.reader.join()

    async def _spawn(self, slot: WorkerSlot) -> None:
        assert self._loop is not None
        spec = self._spec_for(slot)
        slot.generation += 1
        slot.state = "starting"
        slot.info = slot.stats = slot.failure = None
        slot.inbox = self._ctx.Queue()
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=worker_main, args=(spec, slot.inbox, send), name=f"switchyard-engine-{slot.index}", daemon=True,
        )
        ready: asyncio.Future[WorkerInfo] = self._loop.create_future()
        ready.add_done_callback(_consume_exception)
        slot.ready = ready
        slot.process = process
        await asyncio.to_thread(process.start)
        send.close()  # the child holds the only write end, so its exit shows as end-of-file here
        slot.reader = threading.Thread(
            target=self._read, args=(slot, slot.generation, receive, process),
            name=f"switchyard-engine-reader-{slot.index}", daemon=True,
        )
        slot.reader.start()

    def _read(self, slot: WorkerSlot, generation: int, conn: Connection, process: BaseProcess) -> None:
        """Reader thread: forwards a worker's messages to the event loop until the process ends."""
        call = self._call_soon
        try:
            while True:
                if conn not in wait([conn, process.sentinel]):
                    while conn.poll():  # the process ended: take what it sent last
                        call(self._deliver, slot, generation, conn.recv())
                    break
                call(self._deliver, slot, generation, conn.recv())
        except (EOFError, OSError):
            pass  # the pipe closed: the process is gone or going
        except Exception:
            log.exception("local engine worker %d: unreadable message; stopping it", slot.index)
            process.kill()
        finally:
            conn.close()
        process.join()
        call(self._exited, slot, generation, process.exitcode)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the event loop has closed; nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, slot: WorkerSlot, generation: int, message: object) -> None:
        if generation == slot.generation:
            self._on_message(slot, message)

    def _exited(self, slot: WorkerSlot, generation: int, exitcode: int | None) -> None:
        if generation != slot.generation:
            return
        slot.state = "stopped" if self.closing else "dead"
        cause = slot.failure or describe_exit(exitcode)
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(
                RuntimeError(f"local engine worker {slot.index} ({slot.device}) failed to start: {cause}")
            )
        self._on_exit(slot, exitcode)
        if self.restart_on_exit and not self.closing:
            slot.failures_in_row += 1
            task = asyncio.ensure_future(self._restart(slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, slot: WorkerSlot) -> None:
        delay = min(_MAX_BACKOFF_SECONDS, self._backoff * 2 ** (slot.failures_in_row - 1))
        log.warning("restarting local engine worker %d (%s) in %.1f s", slot.index, slot.device, delay)
        await asyncio.sleep(delay)  # back-off between restarts, so a crash loop does not spin
        if self.closing:
            return
        slot.restarts += 1
        metrics.WORKER_RESTARTS.labels(self._model, str(slot.index)).inc()
        await self._spawn(slot)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _consume_exception(future: asyncio.Future[WorkerInfo]) -> None:
    # A restart's readiness is not awaited by anyone; its failure is logged, not raised.
    if not future.cancelled():
        future.exception()
