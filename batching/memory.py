"""KV cache sizing: bytes per token, the budget on a GPU from its free memory, blocks in a budget."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_CPU_KV_CACHE_MB",
    "ModelShape",
    "cuda_kv_budget_bytes",
    "forward_reserve_bytes",
    "kv_blocks_for_budget",
    "kv_bytes_per_token",
]

DEFAULT_CPU_KV_CACHE_MB = 1024
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelShape:
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    dtype_bytes: int


def kv_bytes_per_token(shape: ModelShape) -> int:
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * shape.dtype_bytes


def forward_reserve_bytes(
    shape: ModelShape, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int
) -> int:
    """A generous bound on one forward's working memory, left free beside the KV cache."""
    b = shape.dtype_bytes
    tokens = max_num_batched_tokens
    per_token = 3 * shape.hidden_size + (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    per_token += 3 * shape.intermediate_size
    activations = tokens * per_token * b
    # One layer's K and V gathered for every decoding sequence at full length.
    gathered = 2 * max_num_seqs * max_model_len * shape.num_kv_heads * shape.head_dim * b
    scores = tokens * shape.num_heads * max_model_len * 4
    logits = 4 * max_num_seqs * shape.vocab_size * 4  # logits, probabilities, sort, cumulative sums
    return 2 * (activations + gathered + scores + logits) + 256 * _MIB


def cuda_kv_budget_bytes(free_bytes: int, total_bytes: int, utilization: float, reserve_bytes: int) -> int:
    """KV bytes once the model is loaded: this process may bring the device to `utilization` of its
    memory, counting what is already in use by anyone (weights, other processes), less `reserve_bytes`."""
    if not 0 < utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
    in_use = total_bytes - free_bytes
    budget = int(total_bytes * utilization) - in_use - reserve_bytes
    if budget <= 0:
        raise ValueError(
            f"no GPU memory left for the KV cache: {in_use / _MIB:.0f} MiB of {total_bytes / _MIB:.0f} MiB "
            f"in use, utilization {utilization}, forward reserve {reserve_bytes / _MIB:.0f} MiB"
        )
    return budget


def kv_blocks_for_budget(budget_bytes: int, block_size: int, bytes_per_token: int) -> int:
    return budget_bytes // (block_size * bytes_per_token)
