"""`EngineSettings`: the local engine's configuration, validated when it is built."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batching.devices import normalize_device
from batching.models import resolve_model

__all__ = ["EngineSettings"]


class EngineSettings(BaseModel):
    """Every limit is per worker (one worker per device).

    `max_num_batched_tokens` is the token budget of one iteration (decodes plus prompt chunks); the
    default suits a small CPU, where a bigger prompt chunk stalls every stream's next token for
    longer. On a GPU raise it (2048 or more) along with `max_num_seqs`.

    `kv_cache_memory_mb` left unset means 1024 MiB on CPU and, on a GPU, whatever free memory
    remains below `gpu_memory_utilization` once the model is loaded. `kv_cache_blocks`, when set,
    fixes the number of KV blocks instead (tests and capacity planning). A worker accepts up to
    `max_num_seqs` running plus `max_queue` waiting requests; beyond that on every worker the pool
    raises `EngineOverloaded`. `enable_prefix_caching` (on by default, as in vLLM) shares the KV of
    prompts' common prefixes (system prompts, earlier turns) between requests.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str = "bundled:smollm2-135m-instruct"
    devices: Literal["auto"] | list[str] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_num_seqs: int = Field(32, ge=1, le=4096)
    max_num_batched_tokens: int = Field(256, ge=1)
    max_model_len: int = Field(2048, ge=2)
    block_size: int = Field(16, ge=1, le=1024)
    kv_cache_memory_mb: int | None = Field(None, ge=1)
    kv_cache_blocks: int | None = Field(None, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_queue: int = Field(64, ge=0)
    torch_threads: int | None = Field(None, ge=1)
    warmup: bool = True
    enable_prefix_caching: bool = True
    start_timeout_s: float = Field(600.0, gt=0)
    restart_backoff_s: float = Field(1.0, ge=0)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        resolve_model(value)
        return value

    @field_validator("devices")
    @classmethod
    def _devices_valid(cls, value: Literal["auto"] | list[str]) -> Literal["auto"] | list[str]:
        if value == "auto":
            return value
        if not value:
            raise ValueError("devices is empty; use 'auto' or a list such as ['cpu'] or ['cuda:0']")
        return [normalize_device(d) for d in value]

    @model_validator(mode="after")
    def _budget_fits_sequences(self) -> EngineSettings:
        if self.max_num_batched_tokens < self.max_num_seqs:
            # Otherwise some running sequences could not decode in an iteration.
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs})"
            )
        return self
