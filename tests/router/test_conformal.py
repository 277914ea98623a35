"""Conformal margins and the blend decision (router/conformal.py): pure functions, table-tested."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.conformal import assess, conformal_margin, gap, kept_count


@pytest.mark.parametrize(
    ("gaps", "coverage", "margin"),
    [
        ([0.0] * 49 + [0.5], 0.98, 0.5),  # k = ceil(51 * 0.98) = 50: the largest of 50
        ([0.1 * i for i in range(99)], 0.98, 9.7),  # k = ceil(100 * 0.98) = 98
        ([0.0, 0.2], 0.5, 0.2),  # k = ceil(3 * 0.5) = 2
        ([0.0] * 10, 0.98, math.inf),  # too few calls to promise 98 %: keep everything
    ],
)
def test_conformal_margin(gaps: list[float], coverage: float, margin: float) -> None:
    assert conformal_margin(gaps, coverage) == pytest.approx(margin)


def test_margin_holds_coverage_on_fresh_calls() -> None:
    rng = np.random.default_rng(5)
    covered = []
    for _ in range(300):
        margin = conformal_margin(rng.exponential(size=100), 0.9)
        covered.append(float(np.mean(rng.exponential(size=100) <= margin)))
    assert 0.9 <= np.mean(covered) <= 0.92  # at least the coverage, at most 1/(n+1) above it


def test_gap_and_kept_count_skip_tools_that_cannot_score() -> None:
    scores = np.array([1.0, -np.inf, 0.7, 0.95])
    assert gap(scores, 0) == 0.0 and gap(scores, 2) == pytest.approx(0.3)
    assert kept_count(scores, 0.1) == 2 and kept_count(scores, 0.3) == 3


def _scores(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


def test_blends_only_when_it_keeps_fewer_tools_at_the_same_coverage() -> None:
    zero_shot = _scores([[1.0, 0.9, 0.8, 0.7]] * 4)
    better = _scores([[1.0, 1.9, 0.8, 0.7]] * 4)  # the called tool (1) moved to the top
    worse = _scores([[2.0, 0.9, 0.8, 0.7]] * 4)  # a wrong tool moved further ahead
    called = [1, 1, 1, 1]
    good = assess(zero_shot, better, called, 0.5, 2)
    assert good is not None and good.blend and good.margin == 0.0 and good.kept_blended < good.kept_zero_shot
    bad = assess(zero_shot, worse, called, 0.5, 2)
    assert bad is not None and not bad.blend and bad.margin == pytest.approx(0.1)
    assert assess(zero_shot, better, called, 0.5, 5) is None  # fewer held-back calls than required
