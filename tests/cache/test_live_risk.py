"""The calibrated decision: conformal thresholds, and live verified samples tightening a scope."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from cache import CacheSettings, MemoryStore, ResponseCache, load_calibration
from cache.decision import LiveRisk, conformal_threshold, tightened_threshold
from tests.cache.support import Embed, chat, completion, look


@pytest.mark.parametrize(
    ("scores", "alpha", "expected"),
    [
        (list(range(1, 100)), 0.01, 99),  # k = ceil(100 * 0.99) = 99: the largest of 99
        (list(range(1, 200)), 0.01, 198),  # k = ceil(200 * 0.99) = 198
        (list(range(1, 11)), 0.1, 10),
        (list(range(1, 10)), 0.05, math.inf),  # too few negatives to promise 5 %: serve nothing
    ],
)
def test_conformal_threshold(scores: list[float], alpha: float, expected: float) -> None:
    assert conformal_threshold(scores, alpha) == expected


def test_conformal_threshold_holds_alpha_on_fresh_negatives() -> None:
    rng = np.random.default_rng(7)
    alpha, served = 0.05, []
    for _ in range(400):
        t = conformal_threshold(rng.random(200), alpha)
        served.append(float(np.mean(rng.random(200) > t)))
    assert np.mean(served) <= alpha + 0.005


@pytest.mark.parametrize(
    ("samples", "floor", "expected"),
    [
        ([], 0.5, 0.5),
        ([(0.9, False), (0.8, False)], 0.5, 0.5),  # nothing wrong: the calibrated floor stands
        ([(0.9, False), (0.8, True), (0.7, False)], 0.5, 0.8),  # serve only above the contradiction
        ([(0.95, True), (0.9, False)], 0.5, 0.95),  # the best one was wrong: nothing of these passes
        ([(0.9, False)] * 99 + [(0.7, True)], 0.5, 0.5),  # 1 wrong in 100 is within 1 %
        ([(0.9, False)] * 50 + [(0.7, True)] * 2, 0.5, 0.7),
        ([(0.4, True)], 0.5, 0.5),  # below the floor: not a hit the floor lets through
    ],
)
def test_tightened_threshold(samples: list[tuple[float, bool]], floor: float, expected: float) -> None:
    assert tightened_threshold(samples, floor, 0.01) == expected


def test_live_risk_tightens_one_scope_and_the_deployment_floor() -> None:
    live = LiveRisk(alpha=0.1, window=100)
    for i in range(20):  # 43 verdicts in all: enough to measure 10 % deployment-wide
        live.record("a", 0.9 + i * 0.001, False)
        live.record("b", 0.9 + i * 0.001, False)
    assert live.threshold("a", 0.5) == live.threshold("b", 0.5) == 0.5
    for score in (0.6, 0.65, 0.7):
        live.record("a", score, True)
    raised = live.threshold("a", 0.5)
    assert raised == 0.6  # above it: 2 wrong among 22, under 10 %
    wrong, verified = live.wrong_rate("a", raised)
    assert verified > 0 and wrong / verified <= 0.1
    # 3 wrong among 43 verified deployment-wide is under 10 %: scope b keeps its threshold
    assert live.threshold("b", 0.5) == 0.5
    for _ in range(5):
        live.record("c", 0.95, True)
    # now 8 in 48 deployment-wide: every scope's floor rises above the wrong ones
    assert live.threshold("b", 0.5) > 0.5


async def test_verified_contradictions_tighten_their_scope_until_its_wrong_rate_is_under_alpha() -> None:
    alpha = 0.01
    settings = CacheSettings(alpha=alpha, verify_window=500, max_contradictions=100)
    cache = ResponseCache(settings, MemoryStore(), None, vocabulary={})
    await cache.start()
    embed = Embed()
    questions = ["How do I reset my password?", "How do I change my email address?", "Where is my parcel?"]
    asks = ["how can i reset my password", "how can i change my email address", "where is my parcel now"]
    for system in ("scope A", "scope B"):
        for q in questions:
            lookup = await look(cache, "t1", chat(q, system=system), embed)
            assert await cache.store(lookup, completion("answer to " + q))
    hits = {system: [await look(cache, "t1", chat(ask, system=system), embed) for ask in asks]
            for system in ("scope A", "scope B")}
    assert all(h.status == "semantic" for h in hits["scope A"] + hits["scope B"]), hits
    base = cache.calibration.threshold
    # The backend contradicts every hit of scope A: its threshold rises past them all.
    for hit in hits["scope A"]:
        await cache.report(hit, agreed=False)
    scope_a = hits["scope A"][0].scope_key
    assert scope_a is not None
    raised = cache._live.threshold(scope_a, base)
    assert raised >= max(h.score or 0 for h in hits["scope A"])
    wrong, verified = cache._live.wrong_rate(scope_a, raised)
    assert verified == 0 or wrong / verified <= alpha
    for ask in asks:
        again = await look(cache, "t1", chat(ask, system="scope A"), embed)
        assert again.status == "miss", again
    # Scope B verified fine: it keeps serving at the calibrated threshold.
    for hit in hits["scope B"]:
        await cache.report(hit, agreed=True)
    for ask in asks:
        assert (await look(cache, "t1", chat(ask, system="scope B"), embed)).status == "semantic"
    await cache.aclose()


async def test_exported_false_hit_rate_matches_an_offline_replay() -> None:
    """The same verdicts, replayed offline: the exported rate, interval and count agree."""
    from scipy.stats import binomtest

    cache = ResponseCache(CacheSettings(verify_window=50, max_contradictions=1000), MemoryStore(), None,
                          vocabulary={})
    await cache.start()
    embed = Embed()
    lookup = await look(cache, "t1", chat("How do I reset my password?"), embed)
    assert await cache.store(lookup, completion())
    hit = await look(cache, "t1", chat("how can i reset my password"), embed)
    assert hit.status == "semantic"
    rng = np.random.default_rng(3)
    verdicts = [bool(v) for v in rng.random(80) < 0.2]
    for wrong in verdicts:
        await cache.report(hit, agreed=not wrong)
    recent = verdicts[-50:]
    interval = binomtest(sum(recent), len(recent)).proportion_ci(0.95, method="wilson")
    sample = REGISTRY.get_sample_value
    assert sample("switchyard_cache_false_hit_samples", {}) == 50
    assert sample("switchyard_cache_false_hit_rate", {}) == pytest.approx(sum(recent) / 50)
    assert sample("switchyard_cache_false_hit_rate_low", {}) == pytest.approx(interval.low)
    assert sample("switchyard_cache_false_hit_rate_high", {}) == pytest.approx(interval.high)
    await cache.aclose()


def test_the_shipped_calibration_loads_and_vetoes() -> None:
    calibration = load_calibration()
    assert calibration.alpha == 0.01 and calibration.negatives >= 100
    assert set(calibration.trained_on) == {"fow-cache", "bfcl-live-simple", "bfcl-live-multiple"}
    from cache.pair_features import pair_features

    same = pair_features("how can i reset my password", "How do I reset my password?", 0.95, {})
    flipped = pair_features("Don't cancel my subscription", "Cancel my subscription", 0.95, {})
    assert calibration.score(same) > calibration.threshold
    assert calibration.score(flipped) == 0.0
