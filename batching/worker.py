"""The worker process: one per device, running the engine loop and talking to the pool.

It loads the model, reports `WorkerReady`, then repeats: take every pending message (block only when
idle), run one engine step, send one `StepOutput`. Aborts and new requests therefore take effect at
the next iteration. The worker exits on `Shutdown`, when its parent dies, or on an error, which it
reports as `WorkerFailed` first.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import traceback
from dataclasses import dataclass
from multiprocessing import parent_process
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batching.allocator import keep_freed_memory, return_free_memory
from batching.messages import (
    AbortRequest,
    AddRequest,
    IterationStats,
    SetTokenizer,
    Shutdown,
    StepOutput,
    WorkerFailed,
    WorkerInfo,
    WorkerReady,
)

if TYPE_CHECKING:  # the engine imports torch, which only the worker process loads
    from batching.engine import Engine

__all__ = ["WorkerSpec", "worker_main"]

_IDLE_POLL_SECONDS = 1.0  # how often an idle worker checks that its parent is still alive


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, picklable: the settings' fields plus its device and threads."""

    model: str
    device: str
    torch_threads: int
    dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    block_size: int
    kv_cache_memory_mb: int | None
    kv_cache_blocks: int | None
    gpu_memory_utilization: float
    warmup: bool
    enable_prefix_caching: bool = True
    tokenizer_json: str | None = None  # known when the worker is restarted; else sent in `SetTokenizer`


def worker_main(spec: WorkerSpec, inbox: Queue[Any], outbox: Connection) -> None:
    # The pool stops workers itself; a terminal's Ctrl-C must not kill them mid-step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # its name in ps and top (Linux): a worker is told apart at a glance
        Path("/proc/self/comm").write_text("sy-engine")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine whose cores are
    # shared (with the gateway, other workers, anything), spinning threads make every parallel region
    # wait for a descheduled sibling, and a step takes several times longer.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        engine, info = _start(spec)
    except BaseException as exc:  # report anything, including import errors, before exiting
        outbox.send(WorkerFailed(f"{type(exc).__name__}: {exc}"))
        return
    outbox.send(WorkerReady(info))
    try:
        _loop(engine, inbox, outbox)
    except (BrokenPipeError, EOFError):
        return  # the pool is gone
    except BaseException:
        outbox.send(WorkerFailed(traceback.format_exc()))
        raise


def _start(spec: WorkerSpec) -> tuple[Engine, WorkerInfo]:
    import gc

    import torch

    from batching.config import SchedulerConfig
    from batching.engine import Engine
    from batching.memory import kv_bytes_per_token
    from batching.models import resolve_model
    from batching.runner import ModelRunner, RunnerOptions

    torch.set_num_threads(spec.torch_threads)
    options = RunnerOptions(
        device=spec.device, dtype=spec.dtype, max_model_len=spec.max_model_len, block_size=spec.block_size,
        kv_cache_memory_mb=spec.kv_cache_memory_mb, kv_cache_blocks=spec.kv_cache_blocks,
        gpu_memory_utilization=spec.gpu_memory_utilization,
        max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
    )
    runner = ModelRunner(resolve_model(spec.model), options)
    # The loader's copies (dequantized GGUF tensors, the HF model) are gone: return their pages,
    # then keep what the forward passes allocate from here on.
    gc.collect()
    return_free_memory()
    keep_freed_memory()
    config = SchedulerConfig(
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        max_model_len=runner.max_model_len,
        num_kv_blocks=runner.num_kv_blocks,
        block_size=spec.block_size,
        watermark_blocks=max(1, runner.num_kv_blocks // 100),
        enable_prefix_caching=spec.enable_prefix_caching,
    )
    if spec.warmup:
        runner.warmup()
    info = WorkerInfo(
        pid=os.getpid(), device=spec.device, dtype=str(runner.dtype).removeprefix("torch."),
        torch_threads=spec.torch_threads, num_kv_blocks=runner.num_kv_blocks, block_size=spec.block_size,
        kv_bytes_per_token=kv_bytes_per_token(runner.shape), max_model_len=runner.max_model_len,
        vocab_size=runner.vocab_size, eos_token_ids=tuple(sorted(runner.eos_token_ids)),
        load_seconds=runner.load_seconds, dtype_reason=runner.dtype_reason,
        prefix_caching=spec.enable_prefix_caching,
    )
    engine = Engine(runner, config)
    if spec.tokenizer_json is not None:
        _set_tokenizer(engine, spec.tokenizer_json)
    return engine, info


def _set_tokenizer(engine: Engine, tokenizer_json: str) -> None:
    from batching.grammar import GrammarTokenizer

    runner = engine.runner
    engine.grammar_tokenizer = GrammarTokenizer(tokenizer_json, runner.vocab_size, sorted(runner.eos_token_ids))


def _loop(engine: Engine, inbox: Queue[Any], outbox: Connection) -> None:
    parent = parent_process()
    while True:
        messages: list[Any] = []
        if not engine.has_work:
            try:
                messages.append(inbox.get(timeout=_IDLE_POLL_SECONDS))
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
        while True:
            try:
                messages.append(inbox.get_nowait())
            except queue.Empty:
                break
        rejected: list[tuple[int, str]] = []
        for message in messages:
            if isinstance(message, Shutdown):
                return
            if isinstance(message, AbortRequest):
                engine.abort(message.seq_id)
            elif isinstance(message, AddRequest):
                try:
                    engine.add(message.seq_id, list(message.prompt_token_ids), message.sampling, message.priority,
                               message.grammar, message.after)
                except ValueError as exc:
                    rejected.append((message.seq_id, str(exc)))
            elif isinstance(message, SetTokenizer):
                _set_tokenizer(engine, message.tokenizer_json)
        if engine.has_work:
            report = engine.step()
            logprobs = report.logprobs
            tokens = [(r.seq_id, r.token_id, r.finish_reason, logprobs.get(r.seq_id)) for r in report.results]
            stats = _stats(engine, report.num_batched_tokens, report.num_batched_seqs, report.num_preemptions,
                           report.step_seconds, report.queue_seconds)
            outbox.send(StepOutput(tokens, rejected, stats))
        elif rejected or messages:
            outbox.send(StepOutput([], rejected, _stats(engine, 0, 0, 0, 0.0, {})))


def _stats(engine: Engine, tokens: int, seqs: int, preemptions: int, seconds: float,
           queued: dict[int, float]) -> IterationStats:
    scheduler = engine.scheduler
    return IterationStats(
        num_running=scheduler.num_running,
        num_waiting=scheduler.num_waiting,
        num_kv_blocks_used=scheduler.block_manager.num_used_blocks,
        num_batched_tokens=tokens,
        num_batched_seqs=seqs,
        num_preemptions=preemptions,
        step_seconds=seconds,
        queue_seconds=queued,
        prefix_cache_queries=scheduler.block_manager.prefix_queries,
        prefix_cache_hits=scheduler.block_manager.prefix_hits,
    )
