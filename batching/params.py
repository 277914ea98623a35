"""What a caller asks of the engine and what it gets back, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from batching.errors import InvalidRequest

__all__ = [
    "MAX_CHOICES", "MAX_TOP_LOGPROBS", "EngineTimings", "GenerationOutput", "GenerationRequest", "SamplingParams",
    "TokenLogprob",
]

_MAX_STOP_STRINGS = 16
_MAX_SEED = 2**63 - 1
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 16


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding controls for one request. `temperature=0` is greedy; `top_k=0` and `top_p=1` are off.

    `stop` strings end the output before the first occurrence (the stop string itself is not returned);
    `stop_token_ids` end it after one of those tokens. `ignore_eos` keeps generating past the model's
    end-of-sequence token (benchmarks use it). Penalties follow OpenAI (presence, frequency: over the
    generated tokens) and vLLM (`repetition_penalty`: over prompt and output, 1 is off). `logprobs`
    asks for the log-probability of each chosen token under the model (before penalties, temperature
    and any grammar), with the `top_logprobs` most likely alternatives. `n` choices share the prompt.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int = 256
    stop: Sequence[str] = ()
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1

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
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -2 <= value <= 2):
                raise InvalidRequest(f"{name} must be in [-2, 2], got {value}", name)
        if not (math.isfinite(self.repetition_penalty) and 0 < self.repetition_penalty <= 10):
            raise InvalidRequest(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}",
                                 "repetition_penalty")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}",
                                 "top_logprobs")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs to be true", "top_logprobs")
        if not 1 <= self.n <= MAX_CHOICES:
            raise InvalidRequest(f"n must be in [1, {MAX_CHOICES}], got {self.n}", "n")
        ids = tuple(self.stop_token_ids)
        if len(ids) > _MAX_STOP_STRINGS or any(not isinstance(t, int) or t < 0 for t in ids):
            raise InvalidRequest(f"stop_token_ids must be at most {_MAX_STOP_STRINGS} token ids", "stop_token_ids")
        object.__setattr__(self, "stop_token_ids", ids)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """`grammar`, when set, constrains every choice (an llguidance grammar, see `batching.grammar`)."""

    prompt_token_ids: Sequence[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: Literal["interactive", "batch"] = "interactive"
    grammar: str | None = None

    def __post_init__(self) -> None:
        if self.priority not in ("interactive", "batch"):
            raise InvalidRequest(f"priority must be 'interactive' or 'batch', got {self.priority!r}", "priority")
        object.__setattr__(self, "prompt_token_ids", tuple(int(t) for t in self.prompt_token_ids))


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The chosen token's log-probability and the most likely alternatives, most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class EngineTimings:
    """When the engine took a choice, on the caller's `time.perf_counter()` clock: submitted to the
    pool, `queued_s` waiting for a worker's scheduler, and its first token back at the pool
    (prefill, and the trips to and from the worker)."""

    submitted: float
    queued_s: float
    first_token_at: float
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """One streamed step of choice `index`: `text` and `token_ids` are new since its previous output.

    `text` is always whole characters (never half a UTF-8 sequence or half a merge). The last
    output of a choice carries `finish_reason`: "stop" (end-of-sequence token, stop token or stop
    string) or "length". `logprobs` has one entry per token in `token_ids` when they were asked for.
    """

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"] | None
    prompt_tokens: int
    completion_tokens: int
    index: int = 0
    logprobs: list[TokenLogprob] | None = None
    timings: EngineTimings | None = None  # on the first output of each choice
