"""Which tools to keep: pure decisions over scores, no I/O, tested with tables.

A request's tools are scored against its intent (higher is better). The kept set is the top k by
score plus every tool that must survive (forced by `tool_choice`, called earlier, pinned). k adapts to
the shape of the scores:

- a clear winner (the runner-up is more than `margin` behind) keeps `min_keep`;
- a flat head keeps every tool within `margin` of the best, up to `max_keep`;
- a best score under `widen_below` means the intent matched nothing well: keep `widen_keep`;
- a best score under `fallback_below`, or no scores at all, passes the full list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Band", "Decision", "KeepPolicy", "band_of", "choose_k", "decide"]

Band = Literal["high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    min_keep: int = 3
    max_keep: int = 15
    margin: float = 0.45
    widen_below: float = 0.7
    widen_keep: int = 80
    fallback_below: float = 0.3
    high_from: float = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    keep: tuple[int, ...]  # indices into the request's tools, ascending: the original order
    k: int  # tools kept on score alone (before the must-keep ones are added)
    confidence: float  # the best score
    band: Band
    fallback: bool  # the full list passes


def band_of(best: float, policy: KeepPolicy) -> Band:
    if best >= policy.high_from:
        return "high"
    if best >= policy.widen_below:
        return "medium"
    return "low"


def choose_k(ranked: npt.NDArray[np.float64], policy: KeepPolicy) -> int | None:
    """How many of the best-scored tools to keep; None means the full list. `ranked` is descending."""
    n = len(ranked)
    if n == 0:
        return None
    best = float(ranked[0])
    if best < policy.fallback_below:
        return None
    if best < policy.widen_below:
        return min(n, max(policy.widen_keep, policy.min_keep))
    within = int(np.count_nonzero(ranked >= best - policy.margin))
    return min(n, max(policy.min_keep, min(policy.max_keep, within)))


def decide(scores: npt.NDArray[np.float64] | None, must_keep: Iterable[int], policy: KeepPolicy) -> Decision:
    """The kept indices for one request. `scores` is None when the intent could not be scored."""
    if scores is None or len(scores) == 0:
        n = 0 if scores is None else len(scores)
        return Decision(keep=tuple(range(n)), k=n, confidence=0.0, band="low", fallback=True)
    n = len(scores)
    # A stable sort keeps ties in their original order, so equal scores are decided the same way every time.
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    best = float(ranked[0])
    k = choose_k(ranked, policy)
    if k is None:
        return Decision(keep=tuple(range(n)), k=n, confidence=best, band="low", fallback=True)
    kept = set(order[:k].tolist()) | {i for i in must_keep if 0 <= i < n}
    return Decision(keep=tuple(sorted(kept)), k=k, confidence=best, band=band_of(best, policy), fallback=False)
