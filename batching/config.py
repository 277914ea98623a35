"""The scheduler's configuration: a few numbers, never a model config or a path."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SchedulerConfig"]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Limits that one worker's scheduler enforces each iteration.

    `num_kv_blocks` × `block_size` is the KV cache capacity in tokens; the runner sizes it and the
    scheduler only counts blocks. `enable_prefix_caching` shares the KV blocks of identical prompt
    prefixes between sequences (see `batching.block_manager`). `watermark_blocks` are kept free when
    admitting a new sequence alongside running ones, so that decodes do not preempt right after an
    admission.
    """

    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    max_model_len: int = 2048
    num_kv_blocks: int = 1024
    block_size: int = 16
    watermark_blocks: int = 0
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        positive = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "num_kv_blocks", "block_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"SchedulerConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.watermark_blocks < 0:
            raise ValueError(f"SchedulerConfig.watermark_blocks must be >= 0, got {self.watermark_blocks}")
        capacity = self.num_kv_blocks * self.block_size
        if self.max_model_len > capacity:
            # A lone sequence must always fit, or it could never finish.
            raise ValueError(
                f"max_model_len={self.max_model_len} exceeds the KV cache capacity of {capacity} tokens "
                f"({self.num_kv_blocks} blocks of {self.block_size}); "
                "raise the KV cache memory or lower max_model_len"
            )
