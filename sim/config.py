"""The simulator's configuration: latency and length distributions, fault rates, per-request overrides.

One `SimConfig` drives every request. It comes from CLI flags, a YAML/JSON profile, or a live
`POST /sim/config` (a partial document merged over the current one). A request may carry a `sim`
object (`SimOverride`) that pins its own behaviour, so tests stay deterministic.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Distribution",
    "Fault",
    "FaultRates",
    "SimConfig",
    "SimOverride",
    "load_profile",
    "merge_config",
]

Fault = Literal["error", "hang", "disconnect", "slow", "malformed_json", "malformed_sse"]
Api = Literal["chat", "completions", "embeddings", "messages"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Model):
    """A non-negative random quantity: fixed, uniform or lognormal, with an optional heavy tail.

    `value` is the fixed value, the uniform midpoint default, and the lognormal median. A draw
    lands in the tail with probability `tail_fraction` and is then multiplied by `tail_factor`.
    """

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    value: float = Field(default=0.0, ge=0)
    low: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, ge=0)
    sigma: float = Field(default=0.5, ge=0, description="lognormal shape (std-dev of the log)")
    tail_fraction: float = Field(default=0.0, ge=0, le=1)
    tail_factor: float = Field(default=1.0, ge=1)

    @model_validator(mode="after")
    def _check_bounds(self) -> Distribution:
        if self.kind == "uniform" and (self.low is None or self.high is None):
            raise ValueError("uniform distribution needs 'low' and 'high'")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("'low' must not exceed 'high'")
        return self

    @classmethod
    def fixed(cls, value: float) -> Distribution:
        return cls(kind="fixed", value=value)

    @property
    def mean(self) -> float:
        """Expected value, tail included (what a load test should measure on average)."""
        if self.kind == "fixed":
            base = self.value
        elif self.kind == "uniform":
            base = ((self.low or 0.0) + (self.high or 0.0)) / 2
        else:
            base = self.value * math.exp(self.sigma**2 / 2)
        return base * (1 - self.tail_fraction + self.tail_fraction * self.tail_factor)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            x = self.value
        elif self.kind == "uniform":
            x = rng.uniform(self.low or 0.0, self.high or 0.0)
        else:
            x = self.value * math.exp(rng.gauss(0.0, self.sigma)) if self.value > 0 else 0.0
        if self.tail_fraction and rng.random() < self.tail_fraction:
            x *= self.tail_factor
        return x


class FaultRates(_Model):
    """Probabilities (each in [0, 1], summing to at most 1) that a request meets a fault."""

    error: float = Field(default=0.0, ge=0, le=1)
    hang: float = Field(default=0.0, ge=0, le=1)
    disconnect: float = Field(default=0.0, ge=0, le=1)
    slow: float = Field(default=0.0, ge=0, le=1)
    malformed_json: float = Field(default=0.0, ge=0, le=1)
    malformed_sse: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check_total(self) -> FaultRates:
        if sum(self.model_dump().values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        return self


class SimConfig(_Model):
    """Everything the simulator does, in milliseconds and tokens."""

    models: tuple[str, ...] = ("sim-model",)
    apis: tuple[Api, ...] = Field(
        default=("chat", "completions", "embeddings", "messages"),
        description="APIs served (a Messages-only server: just messages); the others answer 404",
    )
    ttft_ms: Distribution = Distribution.fixed(0.0)
    itl_ms: Distribution = Distribution.fixed(0.0)
    output_tokens: Distribution = Distribution.fixed(16)
    tokens_per_chunk: int = Field(default=1, ge=1, description="tokens carried by one SSE chunk (bunching)")
    chunks_per_burst: int = Field(
        default=1,
        ge=1,
        description="SSE chunks flushed together with no gap between them (transport bunching)",
    )
    tool_call_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of tool-carrying requests answered by a call"
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="generations running at once; the rest queue, as on a saturated server"
    )
    embedding_dim: int = Field(default=384, ge=1, le=8192)
    seed: int = 0
    faults: FaultRates = FaultRates()
    error_status: int = Field(default=500, description="status of injected errors")
    retry_after_s: float = Field(default=1.0, ge=0, description="Retry-After sent with injected 429s")
    disconnect_after_chunks: int = Field(default=2, ge=0)
    slow_itl_ms: float = Field(default=1000.0, ge=0, description="inter-token latency of a 'slow' stream")
    hang_s: float = Field(default=3600.0, ge=0, description="how long a 'hang' waits before giving up")
    recent_requests: int = Field(default=64, ge=0, description="received requests kept for GET /sim/stats")

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if not self.models:
            raise ValueError("models: at least one model must be served")
        if self.error_status not in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504):
            raise ValueError(f"error_status: {self.error_status} is not a status the sim injects")
        return self


class SimOverride(_Model):
    """The `sim` object a request may carry to pin its own behaviour (all fields optional)."""

    fault: Fault | None = None
    status: int | None = Field(default=None, ge=400, le=599)
    after_chunks: int | None = Field(default=None, ge=0)
    ttft_ms: float | None = Field(default=None, ge=0)
    itl_ms: float | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    tokens_per_chunk: int | None = Field(default=None, ge=1)
    tool: str | None = Field(default=None, description="answer with a call to this tool")
    retry_after_s: float | None = Field(default=None, ge=0)


def merge_config(base: SimConfig, patch: dict[str, Any]) -> SimConfig:
    """`base` with `patch` laid over it, validated again.

    Nested objects merge key by key (`{"faults": {"hang": 0.1}}` keeps the other rates), except a
    distribution given with its `kind`, which replaces the old one whole (no stale tail settings).
    """

    def deep(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            merge = isinstance(value, dict) and "kind" not in value and isinstance(out.get(key), dict)
            out[key] = deep(out[key], value) if merge else value
        return out

    return SimConfig.model_validate(deep(base.model_dump(), patch))


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON profile (a partial `SimConfig` document)."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sim profile must be a mapping")
    return data
