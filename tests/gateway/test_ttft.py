from __future__ import annotations

import pytest

from gateway.backends.ttft import LatencyWindow, TTFTModel


def test_prediction_grows_with_outstanding_work() -> None:
    model = TTFTModel()
    assert model.predict(0) is None and model.stale
    for outstanding in range(10):
        model.observe(0.1 + 0.05 * outstanding, outstanding)
    assert model.predict(0) == pytest.approx(0.1, abs=1e-6)
    assert model.predict(20) == pytest.approx(1.1, abs=1e-6)
    assert not model.stale


def test_without_spread_work_queues_behind_the_mean() -> None:
    model = TTFTModel()
    for _ in range(5):
        model.observe(0.2, 1)
    assert model.predict(1) == pytest.approx(0.2)
    assert model.predict(3) > model.predict(1)  # type: ignore[operator]


def test_recent_observations_dominate() -> None:
    model = TTFTModel(half_life=5)
    for _ in range(50):
        model.observe(1.0, 0)
    for _ in range(50):
        model.observe(0.1, 0)
    assert model.predict(0) == pytest.approx(0.1, abs=0.01)


def test_latency_window_percentile() -> None:
    window = LatencyWindow(size=100, every=1)
    for i in range(100):
        window.add(float(i))
    assert window.percentile(95) == 95.0
    assert window.percentile(50) == 50.0
