"""Deterministic pseudo-embeddings: a unit vector seeded by a hash of the input, nothing learned."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["embed", "embedding_inputs"]


def embedding_inputs(raw: Any) -> list[str] | None:
    """The request's `input` as a list of strings (token arrays become their decimal text), or None."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    return None


def embed(text: str, dim: int) -> npt.NDArray[np.float32]:
    """A unit float32 vector of length `dim`; the same text always gives the same vector."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
