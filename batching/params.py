"""What a caller asks of the engine and what it gets back, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from batching.errors import InvalidRequest

__all__ = ["GenerationOutput", "GenerationRequest", "SamplingParams"]

_MAX_STOP_STRINGS = 16
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding controls for one request. `temperature=0` is greedy; `top_k=0` and `top_p=1` are off.

    `stop` strings end the output before the first occurrence (the stop string itself is not returned).
    `ignore_eos` keeps generating past the model's end-of-sequence token (benchmarks use it).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int = 256
    stop: Sequence[str] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InvalidRequest(f"temperature must be a finite number >= 0, got {self.temperature}", "temperature")
        if not (0 < self.top_p <= 1):
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0 (0 turns it off), got {self.top_k}", "top_k")
        if self.seed is not None and not (0 <= self.seed <= _MAX_SEED):
            raise InvalidRequest(f"seed must be in [0, 2**63 - 1], got {self.seed}", "seed")
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {self.max_tokens}", "max_tokens")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stop) > _MAX_STOP_STRINGS or any(not isinstance(s, str) or not s for s in stop):
            raise InvalidRequest(f"stop must be at most {_MAX_STOP_STRINGS} non-empty strings", "stop")
        object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt_token_ids: Sequence[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: Literal["interactive", "batch"] = "interactive"

    def __post_init__(self) -> None:
        if self.priority not in ("interactive", "batch"):
            raise InvalidRequest(f"priority must be 'interactive' or 'batch', got {self.priority!r}", "priority")
        object.__setattr__(self, "prompt_token_ids", tuple(int(t) for t in self.prompt_token_ids))


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """One streamed step: `text` and `token_ids` are new since the previous output.

    `text` is always whole characters (never half a UTF-8 sequence or half a merge). The last
    output carries `finish_reason`: "stop" (end-of-sequence token or stop string) or "length".
    """

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"] | None
    prompt_tokens: int
    completion_tokens: int
