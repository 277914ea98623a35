import numpy as np
import pytest

from router.narrow import KeepPolicy, band_of, choose_k, decide

POLICY = KeepPolicy(
    min_keep=3, max_keep=6, margin=0.3, widen_below=0.7, widen_keep=10, fallback_below=0.3, high_from=1.0
)


@pytest.mark.parametrize(
    ("ranked", "k"),
    [
        ([1.5, 0.9, 0.8, 0.7, 0.6], 3),  # clear winner: the floor of min_keep
        ([1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.72, 0.71, 0.2], 6),  # flat head: capped at max_keep
        ([1.0, 0.95, 0.9, 0.85, 0.3, 0.2, 0.1], 4),  # four within the margin
        ([0.69, 0.68] + [0.1] * 20, 10),  # nothing matched well: widen
        ([0.5, 0.4], 2),  # widening never asks for more than there is
        ([0.29, 0.28, 0.1], None),  # below the fallback floor: the full list
        ([], None),
        ([1.0, 0.9], 2),  # fewer tools than min_keep
    ],
)
def test_choose_k(ranked: list[float], k: int | None) -> None:
    assert choose_k(np.array(ranked), POLICY) == k


@pytest.mark.parametrize(
    ("best", "band"), [(1.2, "high"), (1.0, "high"), (0.99, "medium"), (0.7, "medium"), (0.69, "low"), (0.0, "low")]
)
def test_band(best: float, band: str) -> None:
    assert band_of(best, POLICY) == band


@pytest.mark.parametrize(
    ("scores", "must", "keep", "fallback"),
    [
        # The top three by score, reported in the original order.
        ([0.8, 1.5, 0.1, 0.9, 0.85, 0.2], [], (1, 3, 4), False),
        # A forced tool at the bottom survives; so does a pinned one; out-of-range indices are ignored.
        ([0.8, 1.5, 0.1, 0.9, 0.85, 0.2], [2, 5, 99], (1, 2, 3, 4, 5), False),
        # Below the fallback floor every tool passes, whatever must be kept.
        ([0.1, 0.2, 0.05, 0.1], [1], (0, 1, 2, 3), True),
        # Ties resolve by original position, the same way every time.
        ([1.0, 1.0, 1.0, 1.0, 0.1], [], (0, 1, 2, 3), False),
        # A non-function tool scores -inf and survives only as a must-keep.
        ([1.5, -np.inf, 0.9, 0.8, 0.7, 0.1], [1], (0, 1, 2, 3), False),
    ],
)
def test_decide(scores: list[float], must: list[int], keep: tuple[int, ...], fallback: bool) -> None:
    decision = decide(np.array(scores), must, POLICY)
    assert decision.keep == keep
    assert decision.fallback is fallback
    assert decision.confidence == max(scores)


def test_no_scores_pass_everything() -> None:
    decision = decide(None, [], POLICY)
    assert decision.fallback and decision.keep == () and decision.band == "low"
