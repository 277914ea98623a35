"""Iteration-level scheduling policy: which sequences run in the next forward, and how many tokens each.

Plain Python, no torch and no clocks. One engine step is `schedule()`, the runner's forward over the
returned chunks, then `postprocess()` with the sampled tokens. Each iteration:

1. running sequences that decode take one token each, most important first (interactive before batch,
   then by arrival); one that needs a new KV block and finds none preempts the least important running
   sequence (or itself, when it is the least important): its blocks are freed and it goes back to the
   front of its waiting queue, to be recomputed later with everything generated so far;
2. admitted prompts not yet fully computed take chunks from what is left of the token budget, so that
   decodes keep going while a long prompt is prefilled;
3. waiting sequences are admitted (interactive first) while a slot, the budget and KV blocks for the
   whole prompt are available; an interactive one may preempt running batch work to get in. A prompt
   whose leading blocks are in the prefix cache starts with them computed; a sequence that waits for
   another one's prompt (`Sequence.after`, the other choices of one request) is passed over until that
   prompt is computed.

After the forward, `postprocess()` registers every newly completed block with the prefix cache.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from batching.block_manager import BlockManager
from batching.config import SchedulerConfig
from batching.sequence import Priority, Sequence, SequenceStatus

__all__ = ["ScheduledBatch", "ScheduledChunk", "Scheduler", "StepResult"]


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """Compute KV for `seq.token_ids[start:start + num_tokens]`; sample a token after it when `sample`."""

    seq: Sequence
    start: int
    num_tokens: int
    sample: bool


@dataclass(slots=True)
class ScheduledBatch:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one iteration produced for one sequence: a new token, and why it finished if it did."""

    seq_id: int
    token_id: int
    finish_reason: str | None


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.block_manager = BlockManager(config.num_kv_blocks, config.block_size, config.enable_prefix_caching)
        self.waiting: dict[Priority, deque[Sequence]] = {p: deque() for p in Priority}
        self.running: list[Sequence] = []  # sorted by Sequence.order_key
        self.num_preemptions = 0
        self._arrivals = 0
        self._seqs: dict[int, Sequence] = {}

    @property
    def num_waiting(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self._seqs)

    def get(self, seq_id: int) -> Sequence | None:
        return self._seqs.get(seq_id)

    def add(self, seq: Sequence) -> None:
        if seq.num_tokens == 0:
            raise ValueError("the prompt is empty")
        if seq.num_tokens >= self.config.max_model_len:
            raise ValueError(
                f"the prompt has {seq.num_tokens} tokens; max_model_len is {self.config.max_model_len}"
            )
        if seq.seq_id in self._seqs:
            raise ValueError(f"sequence {seq.seq_id} is already scheduled")
        seq.arrival = self._arrivals
        self._arrivals += 1
        seq.status = SequenceStatus.WAITING
        self._seqs[seq.seq_id] = seq
        self.waiting[seq.priority].append(seq)

    def abort(self, seq_id: int) -> Sequence | None:
        """Drop a sequence wherever it is; its blocks are free for the next `schedule()`."""
        seq = self._seqs.get(seq_id)
        if seq is None:
            return None
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting[seq.priority].remove(seq)
        self._finish(seq, "abort")
        return seq

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self._schedule_decodes(batch, self.config.max_num_batched_tokens)
        budget = self._schedule_prefills(batch, budget)
        self._admit(batch, budget)
        return batch

    def postprocess(self, batch: ScheduledBatch, sampled: list[int]) -> list[StepResult]:
        """Record what the forward computed; `sampled` holds one token per chunk with `sample`, in order."""
        tokens = iter(sampled)
        results: list[StepResult] = []
        for chunk in batch.chunks:
            token = next(tokens) if chunk.sample else None
            seq = chunk.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue
            seq.num_computed_tokens += chunk.num_tokens
            self.block_manager.commit(seq)
            if token is None:
                continue
            seq.append(token)
            reason = None
            if token in seq.stop_token_ids:
                reason = "stop"
            elif seq.num_generated >= seq.max_tokens or seq.num_tokens >= self.config.max_model_len:
                reason = "length"
            if reason is not None:
                self.running.remove(seq)
                self._finish(seq, reason)
            results.append(StepResult(seq.seq_id, token, reason))
        if next(tokens, None) is not None:
            raise ValueError("more sampled tokens than chunks that sample")
        return results

    # -- the three passes ------------------------------------------------------------------------

    def _schedule_decodes(self, batch: ScheduledBatch, budget: int) -> int:
        bm = self.block_manager
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.num_uncomputed != 1:
                continue
            while not bm.can_cover(seq) and self.running[-1] is not seq:
                budget += self._preempt(self.running[-1], batch)
            if not bm.can_cover(seq):
                budget += self._preempt(seq, batch)
                continue
            bm.cover(seq)
            batch.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, 1, sample=True))
            budget -= 1
        return budget

    def _schedule_prefills(self, batch: ScheduledBatch, budget: int) -> int:
        # Admission covered the whole prompt with blocks, so a chunk never needs new ones.
        for seq in self.running:
            if budget == 0:
                break
            if seq.num_uncomputed > 1:
                budget -= self._add_chunk(batch, seq, budget)
        return budget

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        # After a preemption only strictly more important work may enter, or a victim could bounce back.
        ceiling = min((int(s.priority) for s in batch.preempted), default=len(Priority))
        for priority in Priority:
            queue = self.waiting[priority]
            for seq in list(queue):
                if budget <= 0 or int(priority) >= ceiling:
                    break
                if self._deferred(seq):
                    continue
                fits, refund = self._make_room(seq, batch)
                budget += refund
                if not fits:
                    return  # head of line: nothing behind it may take the room it waits for
                queue.remove(seq)
                self.block_manager.allocate(seq)
                seq.status = SequenceStatus.RUNNING
                bisect.insort(self.running, seq, key=lambda s: s.order_key)
                budget -= self._add_chunk(batch, seq, budget)
                ceiling = min((int(s.priority) for s in batch.preempted), default=len(Priority))

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _deferred(seq: Sequence) -> bool:
        first = seq.after
        return first is not None and not first.is_finished and (
            first.status is SequenceStatus.WAITING or first.is_prefilling
        )

    def _fits(self, seq: Sequence) -> bool:
        if len(self.running) >= self.config.max_num_seqs:
            return False
        reserve = self.config.watermark_blocks if self.running else 0
        return self.block_manager.can_allocate(seq, reserve)

    def _make_room(self, seq: Sequence, batch: ScheduledBatch) -> tuple[bool, int]:
        """Whether `seq` can be admitted now (interactive work evicts running batch work to get in),
        and the budget the evicted chunks gave back."""
        refund = 0
        while not self._fits(seq) and self.running and self.running[-1].priority > seq.priority:
            refund += self._preempt(self.running[-1], batch)
        return self._fits(seq), refund

    def _add_chunk(self, batch: ScheduledBatch, seq: Sequence, budget: int) -> int:
        n = min(seq.num_uncomputed, budget)
        batch.chunks.append(ScheduledChunk(seq, seq.num_computed_tokens, n, sample=n == seq.num_uncomputed))
        return n

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> int:
        """Free `seq`'s KV and requeue it at the front; returns the budget its dropped chunk gave back."""
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting[seq.priority].appendleft(seq)
        batch.preempted.append(seq)
        refund = sum(c.num_tokens for c in batch.chunks if c.seq is seq)
        batch.chunks[:] = [c for c in batch.chunks if c.seq is not seq]
        return refund

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        del self._seqs[seq.seq_id]
