"""The outcome of one cache lookup, carried by the gateway to `ResponseCache.store`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["CacheLookup", "Status"]

Status = Literal["exact", "semantic", "miss", "bypass"]


@dataclass
class CacheLookup:
    status: Status
    tenant: str
    reason: str | None = None  # why a miss or bypass: "ineligible", "no_candidate", "guard:number", ...
    detail: str = ""  # finer cause for logs ("temperature", the words that differed); never a label
    similarity: float | None = None  # of the best candidate (served or not)
    score: float | None = None  # the calibrated decision's score of the entry served
    response: dict[str, Any] | None = None  # the stored chat.completion, on a hit
    entry_id: str | None = None  # the entry served
    exact_key: str | None = None
    scope_key: str | None = None
    text: str | None = None
    vector: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    max_tokens: int | None = None
    storable: bool = False  # may the gateway's eventual answer be stored?
    elapsed_s: float = 0.0

    @property
    def hit(self) -> bool:
        return self.status in ("exact", "semantic")
