"""`WorkerPool`: the local engine's front door, one worker process per device behind an asyncio API.

The pool keeps the tokenizer (chat templates in, streamed text out) and dispatches: each request's
prompt ids go to the least-loaded ready worker, once per choice (`n`), and the per-iteration token ids
that come back feed each request's `generate()` stream (`batching.output.ChoiceStream` turns them
into text). Starting, watching and restarting the worker processes is `batching.supervisor`'s job; a
worker that dies fails its requests with `EngineError`. The pool refuses new work with
`EngineOverloaded` when no worker is ready or every worker is full.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batching import metrics
from batching.devices import resolve_devices, torch_threads_for
from batching.errors import EngineError, EngineOverloaded, InvalidRequest
from batching.messages import (
    AbortRequest,
    AddRequest,
    SetTokenizer,
    StepOutput,
    WorkerFailed,
    WorkerInfo,
    WorkerReady,
)
from batching.models import resolve_model
from batching.output import ChoiceStream, TokenArrival
from batching.params import EngineTimings, GenerationOutput, GenerationRequest, TokenLogprob
from batching.sequence import Priority
from batching.settings import EngineSettings
from batching.supervisor import WorkerSlot, WorkerSupervisor, describe_exit
from batching.tokenizer import ChatTokenizer
from batching.worker import WorkerSpec

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

_PRIORITIES = {"interactive": Priority.INTERACTIVE, "batch": Priority.BATCH}
_SEED_STRIDE = 0x9E3779B97F4A7C15  # the other choices of a seeded request get seeds of their own
_Event = tuple[int, TokenArrival] | BaseException  # (choice index, token) or the error that ends it


@dataclass(eq=False)
class _Request:
    """One sequence in a worker: a choice of a `generate()` call, whose events it shares."""

    seq_id: int
    choice: int
    worker: WorkerSlot
    generation: int
    submitted: float
    events: asyncio.Queue[_Event]
    last_token_at: float | None = None
    first_token_at: float | None = None
    queued_s: float = 0.0  # how long the worker's scheduler kept it waiting
    reported: bool = False  # its first output carried the timings
    finished_in_worker: bool = False


@dataclass(eq=False)
class _Call:
    sequences: list[_Request] = field(default_factory=list)
    events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)


class WorkerPool:
    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self._source = resolve_model(settings.model)
        self._supervisor = WorkerSupervisor(self._spec_for, self._on_message, self._on_exit, self._source.name,
                                            settings.restart_backoff_s)
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._tokenizer: ChatTokenizer | None = None
        self._tokenizer_json: str | None = None
        self._ready_event: asyncio.Event | None = None
        self._started = False
        self._closing = False
        self._load_seconds = 0.0

    @property
    def _workers(self) -> list[WorkerSlot]:
        return self._supervisor.slots

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
        self._ready_event = asyncio.Event()
        settings = self.settings
        needs_cuda = settings.devices == "auto" or any(d != "cpu" for d in settings.devices)
        cuda_count = await asyncio.to_thread(_cuda_device_count) if needs_cuda else 0
        try:
            devices = resolve_devices(settings.devices, cuda_count)
        except ValueError as exc:
            raise EngineError(f"local engine devices: {exc}") from exc
        cpus = _cpu_count()
        slots = [
            WorkerSlot(i, d, torch_threads_for(d, devices, cpus, settings.torch_threads)) for i, d in enumerate(devices)
        ]
        tokenizer = asyncio.ensure_future(asyncio.to_thread(ChatTokenizer, self._source))
        try:
            await self._supervisor.start(slots)
            self._tokenizer = await tokenizer
            # The workers enforce grammars with the same vocabulary: they get it once, before any request.
            self._tokenizer_json = self._tokenizer.to_json()
            for slot in slots:
                slot.send(SetTokenizer(self._tokenizer_json))
            await self._supervisor.wait_started(settings.start_timeout_s)
        except BaseException as exc:
            tokenizer.cancel()
            await self._shutdown()
            if isinstance(exc, TimeoutError):
                raise EngineError(f"the local engine did not start within {settings.start_timeout_s} s") from exc
            if isinstance(exc, RuntimeError):
                raise EngineError(str(exc)) from exc
            raise
        self._started = True
        self._supervisor.restart_on_exit = True
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
        await self._supervisor.stop()
        for seq_id in list(self._requests):
            self._fail(seq_id, EngineError("the local engine shut down"))
        self._update_ready()

    def _spec_for(self, slot: WorkerSlot) -> WorkerSpec:
        s = self.settings
        return WorkerSpec(
            model=s.model, device=slot.device, torch_threads=slot.threads, dtype=s.dtype,
            max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens,
            max_model_len=s.max_model_len, block_size=s.block_size, kv_cache_memory_mb=s.kv_cache_memory_mb,
            kv_cache_blocks=s.kv_cache_blocks, gpu_memory_utilization=s.gpu_memory_utilization, warmup=s.warmup,
            enable_prefix_caching=s.enable_prefix_caching, tokenizer_json=self._tokenizer_json,
        )

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

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        """One token as text and as the bytes it stands for (logprobs report both)."""
        return self._require_tokenizer().token_text(token_id)

    @property
    def tokenizer(self) -> ChatTokenizer:
        return self._require_tokenizer()

    def _require_tokenizer(self) -> ChatTokenizer:
        if self._tokenizer is None:
            raise EngineError("the local engine has not been started")
        return self._tokenizer

    # -- generation ------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationOutput, None]:
        """Stream the completion of `request`, its `n` choices interleaved (`GenerationOutput.index`).
        Leaving the loop early (break, cancellation) aborts the sequences in their worker, which frees
        their slots and KV blocks at the next iteration."""
        call = self._submit(request)
        tokenizer = self._require_tokenizer()
        sampling = request.sampling
        choices = [ChoiceStream(i, tokenizer, request.prompt_token_ids, sampling.stop, sampling.logprobs)
                   for i in range(sampling.n)]
        reasons = ["error"] * sampling.n
        try:
            while not all(c.finished for c in choices):
                events = [await call.events.get()]
                while not call.events.empty():
                    events.append(call.events.get_nowait())
                arrivals: dict[int, list[TokenArrival]] = {}
                for event in events:
                    if isinstance(event, BaseException):
                        raise event
                    arrivals.setdefault(event[0], []).append(event[1])
                for index, tokens in sorted(arrivals.items()):
                    choice = choices[index]
                    if choice.finished:
                        continue  # tokens after a stop string, before the abort reached the worker
                    out = choice.add(tokens)
                    if out is None:
                        continue
                    state = call.sequences[index]
                    if not state.reported:
                        state.reported = True
                        out = dataclasses.replace(out, timings=EngineTimings(
                            state.submitted, state.queued_s, state.first_token_at or time.perf_counter(),
                            len(request.prompt_token_ids)))
                    if out.finish_reason is not None:
                        reasons[index] = out.finish_reason
                        self._release(state, out.finish_reason)
                    yield out
        except (asyncio.CancelledError, GeneratorExit):
            reasons = ["cancelled" if r == "error" else r for r in reasons]
            raise
        finally:
            for state, reason in zip(call.sequences, reasons, strict=True):
                self._release(state, reason)

    def _submit(self, request: GenerationRequest) -> _Call:
        if not self._started or self._closing:
            raise EngineError("the local engine is not running")
        prompt = request.prompt_token_ids
        model = self.model_name
        try:
            self._validate(prompt)
            if request.grammar is not None and self._tokenizer_json is None:
                raise InvalidRequest("constrained decoding needs the tokenizer, which is not loaded", "response_format")
        except InvalidRequest:
            metrics.REJECTED.labels(model, "invalid").inc()
            raise
        worker = self._pick(request.sampling.n)
        call = _Call()
        sampling = request.sampling
        first: int | None = None
        for choice in range(sampling.n):
            seq_id = next(self._ids)
            state = _Request(seq_id, choice, worker, worker.generation, time.perf_counter(), call.events)
            self._requests[seq_id] = state
            call.sequences.append(state)
            worker.outstanding.add(seq_id)
            params = sampling
            if choice and sampling.seed is not None:
                params = dataclasses.replace(sampling, seed=(sampling.seed + choice * _SEED_STRIDE) % 2**63)
            worker.send(AddRequest(seq_id, tuple(prompt), params, _PRIORITIES[request.priority], request.grammar,
                                   after=first))
            first = seq_id if first is None else first
        metrics.PROMPT_TOKENS.labels(model).inc(len(prompt))
        return call

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

    def _pick(self, n: int = 1) -> WorkerSlot:
        """The ready worker with the most room for `n` sequences: fewest in flight, then most free KV."""
        ready = [w for w in self._workers if w.state == "ready"]
        if not ready:
            metrics.REJECTED.labels(self.model_name, "overloaded").inc()
            raise EngineOverloaded("no local engine worker is ready (starting or restarting)", retry_after=5.0)
        capacity = self.settings.max_num_seqs + self.settings.max_queue
        room = [w for w in ready if len(w.outstanding) + n <= capacity]
        if not room:
            metrics.REJECTED.labels(self.model_name, "overloaded").inc()
            raise EngineOverloaded(
                f"every local engine worker is full ({capacity} requests each: max_num_seqs + max_queue)",
                retry_after=1.0,
            )
        return min(room, key=lambda w: len(w.outstanding) / capacity + w.kv_used_fraction)

    def _release(self, state: _Request, reason: str) -> None:
        if self._requests.pop(state.seq_id, None) is None:
            return  # released already
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

    # -- what the workers send -----------------------------------------------------------------

    def _on_message(self, worker: WorkerSlot, message: object) -> None:
        if isinstance(message, StepOutput):
            self._on_step(worker, message)
        elif isinstance(message, WorkerReady):
            self._on_ready(worker, message.info)
        elif isinstance(message, WorkerFailed):
            worker.failure = message.message
            log.error("local engine worker %d (%s) failed: %s", worker.index, worker.device, message.message)

    def _on_ready(self, worker: WorkerSlot, info: WorkerInfo) -> None:
        self._supervisor.mark_ready(worker, info)
        metrics.MODEL_LOAD_SECONDS.labels(self.model_name, str(worker.index)).set(info.load_seconds)
        log.info("local engine worker %d ready on %s in %s (%s): %d KV blocks of %d tokens, prefix caching %s, "
                 "loaded in %.1f s", worker.index, info.device, info.dtype, info.dtype_reason, info.num_kv_blocks,
                 info.block_size, "on" if info.prefix_caching else "off", info.load_seconds)
        self._update_ready()

    def _on_step(self, worker: WorkerSlot, message: StepOutput) -> None:
        now = time.perf_counter()
        model = self.model_name
        for seq_id, waited in message.stats.queue_seconds.items():
            state = self._requests.get(seq_id)
            if state is not None:
                state.queued_s = waited
        for seq_id, token, finish, logprob in message.tokens:
            state = self._requests.get(seq_id)
            if state is None or state.worker is not worker:
                continue  # cancelled after the worker produced this token
            if state.last_token_at is None:
                state.first_token_at = now
                metrics.TTFT.labels(model).observe(now - state.submitted)
            else:
                metrics.ITL.labels(model).observe(now - state.last_token_at)
            state.last_token_at = now
            if finish is not None:
                state.finished_in_worker = True
                worker.outstanding.discard(seq_id)
            lp = None if logprob is None else TokenLogprob(token, logprob[0], tuple(zip(*logprob[1:], strict=True)))
            state.events.put_nowait((state.choice, (token, finish, lp)))
        for seq_id, why in message.rejected:
            worker.outstanding.discard(seq_id)
            self._fail(seq_id, InvalidRequest(why, "prompt"))
        worker.stats = message.stats
        metrics.record_step(model, worker.index, message.stats, len(message.tokens), worker.kv_used_fraction)

    def _on_exit(self, worker: WorkerSlot, exitcode: int | None) -> None:
        error = EngineError(
            f"local engine worker {worker.index} ({worker.device}) stopped while serving this request "
            f"({describe_exit(exitcode)}); the request was aborted"
        )
        for seq_id in list(worker.outstanding):
            self._fail(seq_id, error)
        worker.outstanding.clear()
        metrics.REQUESTS_RUNNING.labels(self.model_name, str(worker.index)).set(0)
        metrics.REQUESTS_WAITING.labels(self.model_name, str(worker.index)).set(0)
        self._update_ready()

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
                "dtype_reason": info.dtype_reason if info else None,
                "prefix_caching": info.prefix_caching if info else None,
                "prefix_cache_hit_rate": _hit_rate(stats.prefix_cache_hits, stats.prefix_cache_queries)
                if stats else None,
                "load_seconds": info.load_seconds if info else None,
            })
        return {"model": self.model_name, "ready": self.ready, "load_seconds": self._load_seconds,
                "workers": workers}


def _hit_rate(hits: int, queries: int) -> float | None:
    return round(hits / queries, 4) if queries else None


def _cuda_device_count() -> int:
    from batching.runner import cuda_device_count

    return cuda_device_count()


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
