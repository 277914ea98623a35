"""What the pool and a worker process send each other (pickled over multiprocessing).

Per iteration a worker sends one `StepOutput`: for each sequence only the token it just produced,
never the text or the whole sequence. The pool sends a request's prompt once, in `AddRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batching.params import SamplingParams
from batching.sequence import Priority

__all__ = [
    "AbortRequest",
    "AddRequest",
    "IterationStats",
    "SetTokenizer",
    "Shutdown",
    "StepOutput",
    "TokenEvent",
    "WorkerFailed",
    "WorkerInfo",
    "WorkerReady",
]


# -- pool → worker -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddRequest:
    """`after`: the sequence whose prompt this one shares (another choice of the same request)."""

    seq_id: int
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    priority: Priority
    grammar: str | None = None
    after: int | None = None


@dataclass(frozen=True, slots=True)
class SetTokenizer:
    """The tokenizer (its `tokenizers` JSON), sent once it is loaded, for constrained decoding."""

    tokenizer_json: str


@dataclass(frozen=True, slots=True)
class AbortRequest:
    seq_id: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


# -- worker → pool -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    pid: int
    device: str
    dtype: str
    torch_threads: int
    num_kv_blocks: int
    block_size: int
    kv_bytes_per_token: int
    max_model_len: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    load_seconds: float
    dtype_reason: str = ""
    prefix_caching: bool = True


@dataclass(frozen=True, slots=True)
class WorkerReady:
    info: WorkerInfo


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """Sent before a worker exits on an error: at start-up (bad model, no memory) or in its loop."""

    message: str


@dataclass(frozen=True, slots=True)
class IterationStats:
    num_running: int
    num_waiting: int
    num_kv_blocks_used: int
    num_batched_tokens: int
    num_batched_seqs: int
    num_preemptions: int  # in this iteration
    step_seconds: float
    queue_seconds: dict[int, float] = field(default_factory=dict)  # seq_id → wait, of those scheduled the first time
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache, since the worker started
    prefix_cache_hits: int = 0  # and how many of them were found there


# (seq_id, new token id, finish reason or None, (logprob, top ids, top logprobs) when asked for)
TokenEvent = tuple[int, int, str | None, tuple[float, tuple[int, ...], tuple[float, ...]] | None]


@dataclass(frozen=True, slots=True)
class StepOutput:
    tokens: list[TokenEvent]
    rejected: list[tuple[int, str]]  # (seq_id, why the worker could not take it)
    stats: IterationStats
