"""`Engine`: one worker's step loop body, the scheduler and the runner joined (no processes, no I/O).

`step()` is nano-vllm's three calls: `schedule()`, the runner's forward, `postprocess()`. Tests drive
it directly to check outputs at exact iterations; the worker process wraps it with messaging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from batching.config import SchedulerConfig
from batching.errors import InvalidRequest
from batching.grammar import GrammarTokenizer
from batching.params import SamplingParams
from batching.runner import ModelRunner
from batching.scheduler import Scheduler, StepResult
from batching.sequence import Priority, Sequence

__all__ = ["Engine", "StepReport"]


Logprob = tuple[float, tuple[int, ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class StepReport:
    results: list[StepResult]
    logprobs: dict[int, Logprob]  # seq_id → the logprobs of its new token, for those that asked
    num_batched_tokens: int
    num_batched_seqs: int
    num_preemptions: int
    queue_seconds: dict[int, float] = field(default_factory=dict)  # seq_id → wait, for those scheduled the first time
    step_seconds: float = 0.0


class Engine:
    def __init__(self, runner: ModelRunner, config: SchedulerConfig):
        self.runner = runner
        self.scheduler = Scheduler(config)
        self._arrived: dict[int, float] = {}  # seq_id → arrival time, until first scheduled
        self.grammar_tokenizer: GrammarTokenizer | None = None  # set once the pool sends the tokenizer

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add(self, seq_id: int, prompt_token_ids: list[int], params: SamplingParams,
            priority: Priority = Priority.INTERACTIVE, grammar: str | None = None, after: int | None = None) -> None:
        """Queue a request; `ValueError` when the scheduler cannot take it (empty or too long), or its
        grammar cannot be used. `after` names a sequence whose prompt this one shares (see `Scheduler`)."""
        matcher = None
        if grammar is not None:
            if self.grammar_tokenizer is None:
                raise InvalidRequest("constrained decoding is not available: the worker has no tokenizer")
            matcher = self.grammar_tokenizer.matcher(grammar)
        # A grammar ends with end-of-sequence, whatever ignore_eos says: past it nothing is allowed.
        eos = frozenset() if params.ignore_eos and grammar is None else self.runner.eos_token_ids
        stop_ids = eos | frozenset(params.stop_token_ids)
        first = self.scheduler.get(after) if after is not None else None
        seq = Sequence(seq_id, list(prompt_token_ids), params.max_tokens, priority, stop_ids, after=first)
        self.scheduler.add(seq)
        self.runner.add_sequence(seq_id, params, matcher)
        self._arrived[seq_id] = time.perf_counter()

    def abort(self, seq_id: int) -> bool:
        self._arrived.pop(seq_id, None)
        self.runner.drop_sequence(seq_id)
        return self.scheduler.abort(seq_id) is not None

    def step(self) -> StepReport:
        started = time.perf_counter()
        batch = self.scheduler.schedule()
        queued = {c.seq.seq_id: started - self._arrived.pop(c.seq.seq_id) for c in batch.chunks
                  if c.seq.seq_id in self._arrived}
        tokens = self.runner.run(batch.chunks)
        logprobs = self.runner.take_logprobs()
        results = self.scheduler.postprocess(batch, tokens)
        for result in results:
            if result.finish_reason is not None:
                self.runner.drop_sequence(result.seq_id)
        return StepReport(results, logprobs, batch.num_tokens, len(batch.chunks), len(batch.preempted), queued,
                          time.perf_counter() - started)
