"""`Engine`: one worker's step loop body, the scheduler and the runner joined (no processes, no I/O).

`step()` is nano-vllm's three calls: `schedule()`, the runner's forward, `postprocess()`. Tests drive
it directly to check outputs at exact iterations; the worker process wraps it with messaging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from batching.config import SchedulerConfig
from batching.params import SamplingParams
from batching.runner import ModelRunner
from batching.scheduler import Scheduler, StepResult
from batching.sequence import Priority, Sequence

__all__ = ["Engine", "StepReport"]


@dataclass(frozen=True, slots=True)
class StepReport:
    results: list[StepResult]
    num_batched_tokens: int
    num_batched_seqs: int
    num_preemptions: int
    queue_seconds: list[float] = field(default_factory=list)  # for sequences scheduled the first time
    step_seconds: float = 0.0


class Engine:
    def __init__(self, runner: ModelRunner, config: SchedulerConfig):
        self.runner = runner
        self.scheduler = Scheduler(config)
        self._arrived: dict[int, float] = {}  # seq_id → arrival time, until first scheduled

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add(self, seq_id: int, prompt_token_ids: list[int], params: SamplingParams,
            priority: Priority = Priority.INTERACTIVE) -> None:
        """Queue a request; `ValueError` when the scheduler cannot take it (empty or too long)."""
        stop_ids = frozenset() if params.ignore_eos else self.runner.eos_token_ids
        seq = Sequence(seq_id, list(prompt_token_ids), params.max_tokens, priority, stop_ids)
        self.scheduler.add(seq)
        self.runner.add_sequence(seq_id, params)
        self._arrived[seq_id] = time.perf_counter()

    def abort(self, seq_id: int) -> bool:
        self._arrived.pop(seq_id, None)
        self.runner.drop_sequence(seq_id)
        return self.scheduler.abort(seq_id) is not None

    def step(self) -> StepReport:
        started = time.perf_counter()
        batch = self.scheduler.schedule()
        queued = [started - self._arrived.pop(c.seq.seq_id) for c in batch.chunks if c.seq.seq_id in self._arrived]
        tokens = self.runner.run(batch.chunks)
        results = self.scheduler.postprocess(batch, tokens)
        for result in results:
            if result.finish_reason is not None:
                self.runner.drop_sequence(result.seq_id)
        return StepReport(results, batch.num_tokens, len(batch.chunks), len(batch.preempted), queued,
                          time.perf_counter() - started)
