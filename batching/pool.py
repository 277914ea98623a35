"""`WorkerPool`: the local engine's front door, one worker process per device behind an asyncio API.

The pool keeps the tokenizer (chat templates in, streamed text out) and sends each request's prompt
ids to the least-loaded ready worker. A reader thread per worker forwards its per-iteration token ids
to the event loop, where each request's queue feeds its `generate()` stream. A worker that dies
fails its requests with `EngineError` and is restarted; the pool refuses new work with
`EngineOverloaded` when no worker is ready or every worker is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any, Literal

from batching import metrics
from batching.detokenizer import IncrementalDetokenizer, StopStrings
from batching.devices import resolve_devices, torch_threads_for
from batching.errors import EngineError, EngineOverloaded, InvalidRequest
from batching.messages import (
    AbortRequest,
    AddRequest,
    IterationStats,
    Shutdown,
    StepOutput,
    WorkerFailed,
    WorkerInfo,
    WorkerReady,
)
from batching.models import resolve_model
from batching.params import GenerationOutput, GenerationRequest
from batching.sequence import Priority
from batching.settings import EngineSettings
from batching.tokenizer import ChatTokenizer
from batching.worker import WorkerSpec, worker_main

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 30.0
_PRIORITIES = {"interactive": Priority.INTERACTIVE, "batch": Priority.BATCH}

WorkerState = Literal["starting", "ready", "dead", "stopped"]
_Event = tuple[int, str | None] | BaseException  # (token id, finish reason) or the error that ends it


@dataclass(eq=False)
class _Worker:
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


@dataclass(eq=False)
class _Request:
    seq_id: int
    worker: _Worker
    generation: int
    prompt_tokens: int
    submitted: float
    events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    last_token_at: float | None = None
    finished_in_worker: bool = False


class WorkerPool:
    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self._source = resolve_model(settings.model)
        self._ctx = mp.get_context("spawn")  # fork would copy the event loop's threads and locks
        self._workers: list[_Worker] = []
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._tokenizer: ChatTokenizer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._load_seconds = 0.0

    # -- properties ------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._source.name

    @property
    def ready(self) -> bool:
        """True once started, while at least one worker can take requests."""
        return self._started and not self._closing and any(w.state == "ready" for w in self._workers)

    @property
    def load_seconds(self) -> float:
        """Wall-clock seconds `start()` took: spawn, model load and warm-up in every worker, tokenizer."""
        return self._load_seconds

    @property
    def max_model_len(self) -> int:
        return min((w.info.max_model_len for w in self._workers if w.info), default=self.settings.max_model_len)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the workers; returns once every one has loaded and warmed the model."""
        if self._started or self._closing:
            raise RuntimeError("a WorkerPool starts once")
        started = time.perf_counter()
        self._loop = asyncio.get_running_loop()
        self._ready_event = asyncio.Event()
        settings = self.settings
        needs_cuda = settings.devices == "auto" or any(d != "cpu" for d in settings.devices)
        cuda_count = await asyncio.to_thread(_cuda_device_count) if needs_cuda else 0
        try:
            devices = resolve_devices(settings.devices, cuda_count)
        except ValueError as exc:
            raise EngineError(f"local engine devices: {exc}") from exc
        cpus = _cpu_count()
        self._workers = [
            _Worker(i, d, torch_threads_for(d, devices, cpus, settings.torch_threads)) for i, d in enumerate(devices)
        ]
        tokenizer = asyncio.ensure_future(asyncio.to_thread(ChatTokenizer, self._source))
        try:
            for worker in self._workers:
                await self._spawn(worker)
            futures = [w.ready for w in self._workers if w.ready is not None]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=settings.start_timeout_s)
            self._tokenizer = await tokenizer
        except BaseException as exc:
            tokenizer.cancel()
            await self._shutdown()
            if isinstance(exc, TimeoutError):
                raise EngineError(f"the local engine did not start within {settings.start_timeout_s} s") from exc
            raise
        self._started = True
        self._load_seconds = time.perf_counter() - started
        self._update_ready()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until some worker can take requests (after a restart, say); `TimeoutError` otherwise."""
        if self._ready_event is None:
            raise EngineError("the local engine has not been started")
        await asyncio.wait_for(self._ready_event.wait(), timeout)

    async def aclose(self) -> None:
        """Stop every worker and fail whatever is still in flight."""
        if self._closing:
            return
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for worker in self._workers:
            worker.send(Shutdown())
        await asyncio.to_thread(self._stop_processes)
        for seq_id in list(self._requests):
            self._fail(seq_id, EngineError("the local engine shut down"))
        for worker in self._workers:
            worker.state = "stopped"
            if worker.inbox is not None:
                worker.inbox.cancel_join_thread()
                worker.inbox.close()
        self._update_ready()

    def _stop_processes(self) -> None:
        # Each reader thread reaps its own process; waiting on the readers avoids a second waitpid.
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        for worker in self._workers:
            if worker.reader is None:
                continue
            worker.reader.join(max(0.0, deadline - time.monotonic()))
            if worker.reader.is_alive() and worker.process is not None:
                worker.process.kill()
                worker.reader.join()

    # -- tokenizer -------------------------------------------------------------------------------

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Prompt ids for chat `messages` through the model's chat template."""
        try:
            return self._require_tokenizer().render_chat(messages, add_generation_prompt, tools)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRequest(f"cannot apply the chat template: {exc}", "messages") from exc

    def encode(self, text: str) -> list[int]:
        return self._require_tokenizer().encode(text)

    def decode(self, token_ids: list[int]) -> str:
        return self._require_tokenizer().decode(token_ids)

    def _require_tokenizer(self) -> ChatTokenizer:
        if self._tokenizer is None:
            raise EngineError("the local engine has not been started")
        return self._tokenizer

    # -- generation ------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationOutput, None]:
        """Stream the completion of `request`. Leaving the loop early (break, cancellation) aborts the
        sequence in its worker, which frees its slot and KV blocks at the next iteration."""
        state = self._submit(request)
        tokenizer = self._require_tokenizer()
        detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
        stops = StopStrings(request.sampling.stop)
        completion = 0
        pending: list[int] = []
        reason = "error"
        try:
            while True:
                events = [await state.events.get()]
                while not state.events.empty():
                    events.append(state.events.get_nowait())
                finish: str | None = None
                new: list[int] = []
                for event in events:
                    if isinstance(event, BaseException):
                        raise event
                    new.append(event[0])
                    finish = event[1]
                completion += len(new)
                pending.extend(new)
                text = detokenizer.add(new)
                if finish is not None:
                    text += detokenizer.flush()
                text, stopped = stops.feed(text)
                if stopped:
                    finish = "stop"
                elif finish is not None:
                    text += stops.flush()
                if not text and finish is None:
                    continue  # token ids ride along with the next piece of text
                out = GenerationOutput(text, pending, _finish(finish), state.prompt_tokens, completion)
                pending = []
                if finish is not None:
                    reason = finish if finish == "length" else "stop"
                    yield out
                    return
                yield out
        except (asyncio.CancelledError, GeneratorExit):
            if reason == "error":  # not after the last output had been handed over
                reason = "cancelled"
            raise
        finally:
            self._release(state, reason)

    def _submit(self, request: GenerationRequest) -> _Request:
        if not self._started or self._closing:
            raise EngineError("the local engine is not running")
        prompt = request.prompt_token_ids
        model = self.model_name
        try:
            self._validate(prompt)
        except InvalidRequest:
            metrics.REJECTED.labels(model, "invalid").inc()
            raise
        worker = self._pick()
        seq_id = next(self._ids)
        state = _Request(seq_id, worker, worker.generation, len(prompt), time.perf_counter())
        self._requests[seq_id] = state
        worker.outstanding.add(seq_id)
        worker.send(AddRequest(seq_id, tuple(prompt), request.sampling, _PRIORITIES[request.priority]))
        metrics.PROMPT_TOKENS.labels(model).inc(len(prompt))
        return state

    def _validate(self, prompt: Sequence[int]) -> None:
        limit = self.max_model_len
        if not prompt:
            raise InvalidRequest("the prompt is empty", "prompt")
        if len(prompt) >= limit:
            raise InvalidRequest(
                f"the prompt has {len(prompt)} tokens but the model's context (max_model_len) is {limit} "
                f"tokens, so at most {limit - 1} prompt tokens fit",
                "prompt",
            )
        vocab = min((w.info.vocab_size for w in self._workers if w.info), default=0)
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidRequest(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", "prompt")

    def _pick(self) -> _Worker:
        """The ready worker with the most room: fewest requests in flight, then most free KV."""
        ready = [w for w in self._workers if w.state == "ready"]
        if not ready:
            metrics.REJECTED.labels(self.model_name, "overloaded").inc()
            raise EngineOverloaded("no local engine worker is ready (starting or restarting)", retry_after=5.0)
        capacity = self.settings.max_num_seqs + self.settings.max_queue
        room = [w for w in ready if len(w.outstanding) < capacity]
        if not room:
            metrics.REJECTED.labels(self.model_name, "overloaded").inc()
            raise EngineOverloaded(
                f"every local engine worker is full ({capacity} requests each: max_num_seqs + max_queue)",
                retry_after=1.0,
            )
        return min(room, key=lambda w: len(w.outstanding) / capacity + w.kv_used_fraction)

    def _release(self, state: _Request, reason: str) -> None:
        self._requests.pop(state.seq_id, None)
        worker = state.worker
        worker.outstanding.discard(state.seq_id)
        if not state.finished_in_worker and worker.generation == state.generation:
            worker.send(AbortRequest(state.seq_id))
        metrics.FINISHED.labels(self.model_name, reason).inc()

    def _fail(self, seq_id: int, error: BaseException) -> None:
        state = self._requests.get(seq_id)
        if state is not None:
            state.finished_in_worker = True
            state.events.put_nowait(error)

    # -- worker processes ------------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        assert self._loop is not None
        s = self.settings
        spec = WorkerSpec(
            model=s.model, device=worker.device, torch_threads=worker.threads, dtype=s.dtype,
            max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens,
            max_model_len=s.max_model_len, block_size=s.block_size, kv_cache_memory_mb=s.kv_cache_memory_mb,
            kv_cache_blocks=s.kv_cache_blocks, gpu_memory_utilization=s.gpu_memory_utilization, warmup=s.warmup,
        )
        worker.generation += 1
        worker.state = "starting"
        worker.info = worker.stats = worker.failure = None
        worker.inbox = self._ctx.Queue()
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=worker_main, args=(spec, worker.inbox, send), name=f"switchyard-engine-{worker.index}",
            daemon=True,
        )
        ready: asyncio.Future[WorkerInfo] = self._loop.create_future()
        ready.add_done_callback(_consume_exception)
        worker.ready = ready
        worker.process = process
        await asyncio.to_thread(process.start)
        send.close()  # the child holds the only write end, so its exit shows as end-of-file here
        worker.reader = threading.Thread(
            target=self._read, args=(worker, worker.generation, receive, process),
            name=f"switchyard-engine-reader-{worker.index}", daemon=True,
        )
        worker.reader.start()

    def _read(self, worker: _Worker, generation: int, conn: Connection, process: BaseProcess) -> None:
        """Reader thread: forwards a worker's messages to the event loop until the process ends."""
        call = self._call_soon
        try:
            while True:
                if conn not in wait([conn, process.sentinel]):
                    while conn.poll():  # the process ended: take what it sent last
                        call(self._on_message, worker, generation, conn.recv())
                    break
                call(self._on_message, worker, generation, conn.recv())
        except (EOFError, OSError):
            pass  # the pipe closed: the process is gone or going
        except Exception:
            log.exception("local engine worker %d: unreadable message; stopping it", worker.index)
            process.kill()
        finally:
            conn.close()
        process.join()
        call(self._on_exit, worker, generation, process.exitcode)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the event loop has closed; nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_message(self, worker: _Worker, generation: int, message: object) -> None:
        if generation != worker.generation:
            return
        if isinstance(message, StepOutput):
            self._on_step(worker, message)
        elif isinstance(message, WorkerReady):
            self._on_ready(worker, message.info)
        elif isinstance(message, WorkerFailed):
            worker.failure = message.message
            log.error("local engine worker %d (%s) failed: %s", worker.index, worker.device, message.message)

    def _on_ready(self, worker: _Worker, info: WorkerInfo) -> None:
        worker.info = info
        worker.state = "ready"
        worker.failures_in_row = 0
        metrics.MODEL_LOAD_SECONDS.labels(self.model_name, str(worker.index)).set(info.load_seconds)
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(info)
        log.info("local engine worker %d ready on %s: %d KV blocks of %d tokens, loaded in %.1f s",
                 worker.index, info.device, info.num_kv_blocks, info.block_size, info.load_seconds)
        self._update_ready()

    def _on_step(self, worker: _Worker, message: StepOutput) -> None:
        now = time.perf_counter()
        model, label = self.model_name, str(worker.index)
        for seq_id, token, finish in message.tokens:
            state = self._requests.get(seq_id)
            if state is None or state.worker is not worker:
                continue  # cancelled after the worker produced this token
            if state.last_token_at is None:
                metrics.TTFT.labels(model).observe(now - state.submitted)
            else:
                metrics.ITL.labels(model).observe(now - state.last_token_at)
            state.last_token_at = now
            if finish is not None:
                state.finished_in_worker = True
                worker.outstanding.discard(seq_id)
            state.events.put_nowait((token, finish))
        metrics.GENERATION_TOKENS.labels(model).inc(len(message.tokens))
        for seq_id, why in message.rejected:
            worker.outstanding.discard(seq_id)
            self._fail(seq_id, InvalidRequest(why, "prompt"))
        stats = worker.stats = message.stats
        metrics.REQUESTS_RUNNING.labels(model, label).set(stats.num_running)
        metrics.REQUESTS_WAITING.labels(model, label).set(stats.num_waiting)
        metrics.KV_CACHE_USAGE.labels(model, label).set(worker.kv_used_fraction)
        if stats.num_batched_seqs:
            metrics.ITERATION_TOKENS.labels(model, label).observe(stats.num_batched_tokens)
            metrics.ITERATION_SEQUENCES.labels(model, label).observe(stats.num_batched_seqs)
        if stats.num_preemptions:
            metrics.PREEMPTIONS.labels(model, label).inc(stats.num_preemptions)
        for seconds in stats.queue_seconds:
            metrics.QUEUE_TIME.labels(model, label).observe(seconds)

    def _on_exit(self, worker: _Worker, generation: int, exitcode: int | None) -> None:
        if generation != worker.generation:
            return
        worker.state = "stopped" if self._closing else "dead"
        cause = worker.failure or _describe_exit(exitcode)
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(
                EngineError(f"local engine worker {worker.index} ({worker.device}) failed to start: {cause}")
            )
        error = EngineError(
            f"local engine worker {worker.index} ({worker.device}) stopped while serving this request "
            f"({_describe_exit(exitcode)}); the request was aborted"
        )
        for seq_id in list(worker.outstanding):
            self._fail(seq_id, error)
        worker.outstanding.clear()
        metrics.REQUESTS_RUNNING.labels(self.model_name, str(worker.index)).set(0)
        metrics.REQUESTS_WAITING.labels(self.model_name, str(worker.index)).set(0)
        self._update_ready()
        if self._started and not self._closing:
            worker.failures_in_row += 1
            task = asyncio.ensure_future(self._restart(worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: _Worker) -> None:
        delay = min(_MAX_BACKOFF_SECONDS, self.settings.restart_backoff_s * 2 ** (worker.failures_in_row - 1))
        log.warning("restarting local engine worker %d (%s) in %.1f s", worker.index, worker.device, delay)
        await asyncio.sleep(delay)  # back-off between restarts, so a crash loop does not spin
        if self._closing:
            return
        worker.restarts += 1
        metrics.WORKER_RESTARTS.labels(self.model_name, str(worker.index)).inc()
        await self._spawn(worker)

    def _update_ready(self) -> None:
        if self._ready_event is None:
            return
        if self.ready:
            self._ready_event.set()
        else:
            self._ready_event.clear()

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        workers = []
        for w in self._workers:
            info, stats = w.info, w.stats
            workers.append({
                "index": w.index,
                "device": w.device,
                "state": w.state,
                "pid": w.process.pid if w.process is not None else None,
                "torch_threads": w.threads,
                "restarts": w.restarts,
                "in_flight": len(w.outstanding),
                "running": stats.num_running if stats else 0,
                "waiting": stats.num_waiting if stats else 0,
                "kv_used_fraction": w.kv_used_fraction,
                "kv_blocks": info.num_kv_blocks if info else None,
                "kv_block_size": info.block_size if info else None,
                "max_model_len": info.max_model_len if info else None,
                "dtype": info.dtype if info else None,
                "load_seconds": info.load_seconds if info else None,
            })
        return {"model": self.model_name, "ready": self.ready, "load_seconds": self._load_seconds,
                "workers": workers}


def _finish(reason: str | None) -> Literal["stop", "length"] | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "stop"


def _describe_exit(exitcode: int | None) -> str:
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


def _cuda_device_count() -> int:
    from batching.runner import cuda_device_count

    return cuda_device_count()


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
