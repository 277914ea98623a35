"""One cached answer and what it was stored for."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CacheEntry", "Vector"]

Vector = npt.NDArray[np.float32]


@dataclass
class CacheEntry:
    id: str
    tenant: str
    exact_key: str
    scope_key: str | None  # None: exact layer only
    text: str | None  # the latest user turn it answered (compared by the guards, never embedded again)
    response: dict[str, Any]
    created_at: float
    expires_at: float
    max_tokens: int | None = None  # the request's limit, for answers cut at it
    truncated: bool = False
    completion_tokens: int | None = None
    # Similarity a semantic match must reach; raised when a hit on this entry is contradicted.
    threshold: float = 0.0
    contradictions: int = 0
    vector: Vector | None = field(default=None, repr=False)

    def meta_json(self) -> str:
        """Everything but the response and the vector, as JSON."""
        meta = asdict(self)
        for name in ("response", "vector", "threshold", "contradictions"):
            meta.pop(name)
        return json.dumps(meta, separators=(",", ":"))

    @classmethod
    def from_parts(cls, meta: str | bytes, response: str | bytes, threshold: float = 0.0,
                   contradictions: int = 0) -> CacheEntry:
        fields = json.loads(meta)
        return cls(**fields, response=json.loads(response), threshold=threshold,
                   contradictions=contradictions)
