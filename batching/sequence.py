"""`Sequence`: the unit of state the scheduler, block manager and runner share (no tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

__all__ = ["Priority", "Sequence", "SequenceStatus"]


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Priority(IntEnum):
    """Lower value is served first; batch work yields KV and slots to interactive work."""

    INTERACTIVE = 0
    BATCH = 1


@dataclass(eq=False, slots=True)
class Sequence:
    """One request inside a worker: its tokens, how many have KV in the cache, and its blocks.

    `token_ids` holds the prompt followed by the generated tokens. After a preemption the KV is
    dropped (`num_computed_tokens` back to 0) and the whole of `token_ids` is recomputed as a prompt.
    """

    seq_id: int
    token_ids: list[int]
    max_tokens: int
    priority: Priority = Priority.INTERACTIVE
    stop_token_ids: frozenset[int] = frozenset()
    num_prompt_tokens: int = field(init=False)
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    arrival: int = -1  # order of arrival in its scheduler; ties priorities, picks preemption victims
    num_preemptions: int = 0
    # Admitted only once `after` has computed its prompt, so that it finds that prompt's KV cached
    # (the other choices of an `n > 1` request share the first one's prompt this way).
    after: Sequence | None = None
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of its full blocks (prefix cache)
    num_committed_blocks: int = 0  # leading blocks already registered with the prefix cache

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        """Tokens whose KV is not yet in the cache: the prompt (or its rest) or the last sampled token."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed_tokens < self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def order_key(self) -> tuple[int, int]:
        """Smaller keys are served first and preempted last."""
        return (int(self.priority), self.arrival)

    def append(self, token_id: int) -> None:
        self.token_ids.append(token_id)
