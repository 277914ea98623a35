"""The sim's policy: fault choice, chunk delivery, per-request plans, distributions (tables, no I/O)."""

from __future__ import annotations

import argparse
import random

import pytest

from sim import (
    Chunk,
    Distribution,
    FaultRates,
    SimConfig,
    SimOverride,
    choose_fault,
    delivery_schedule,
    merge_config,
    plan_request,
)
from sim.cli import parse_distribution


@pytest.mark.parametrize(
    ("rates", "u", "expected"),
    [
        ({}, 0.0, None),
        ({"error": 0.1}, 0.05, "error"),
        ({"error": 0.1}, 0.1, None),
        ({"error": 0.1, "hang": 0.2}, 0.25, "hang"),
        ({"error": 0.1, "hang": 0.2}, 0.31, None),
        ({"malformed_sse": 1.0}, 0.999, "malformed_sse"),
        ({"disconnect": 0.5, "slow": 0.5}, 0.75, "slow"),
    ],
)
def test_choose_fault(rates: dict[str, float], u: float, expected: str | None) -> None:
    assert choose_fault(FaultRates(**rates), u) == expected


@pytest.mark.parametrize(
    ("ttft", "itls", "n", "per_chunk", "per_burst", "expected"),
    [
        (0.1, [0.01, 0.01], 3, 1, 1, [(0.1, 1), (0.11, 1), (0.12, 1)]),
        # tokens bunched two per chunk: a chunk leaves when its last token is ready
        (0.1, [0.01, 0.01, 0.01], 4, 2, 1, [(0.11, 2), (0.13, 2)]),
        (0.1, [0.01, 0.01], 3, 2, 1, [(0.11, 2), (0.12, 1)]),
        # chunks bunched two per burst: both leave with the later one
        (0.1, [0.01, 0.01, 0.01], 4, 1, 2, [(0.11, 1), (0.11, 1), (0.13, 1), (0.13, 1)]),
        (0.1, [0.01, 0.01], 3, 1, 2, [(0.11, 1), (0.11, 1), (0.12, 1)]),
        (0.0, [], 0, 1, 1, []),
        (0.2, [], 2, 1, 1, [(0.2, 1), (0.2, 1)]),
    ],
)
def test_delivery_schedule(
    ttft: float, itls: list[float], n: int, per_chunk: int, per_burst: int, expected: list[tuple[float, int]]
) -> None:
    got = delivery_schedule(ttft, itls, n, per_chunk, per_burst)
    assert [(round(c.at_s, 9), c.tokens) for c in got] == [(round(a, 9), t) for a, t in expected]


def test_plan_uses_config_distributions() -> None:
    cfg = SimConfig(ttft_ms=Distribution.fixed(50), itl_ms=Distribution.fixed(5), output_tokens=Distribution.fixed(4))
    plan = plan_request(cfg, None, random.Random(0), max_tokens=None)
    assert plan.fault is None and plan.finish_reason == "stop"
    assert plan.ttft_s == pytest.approx(0.05) and plan.itls_s == pytest.approx((0.005,) * 3)
    assert plan.duration_s == pytest.approx(0.065)
    schedule = plan.schedule()
    assert all(isinstance(c, Chunk) and c.tokens == 1 for c in schedule)
    assert [c.at_s for c in schedule] == pytest.approx([0.05, 0.055, 0.06, 0.065])


@pytest.mark.parametrize(
    ("override", "max_tokens", "check"),
    [
        (SimOverride(output_tokens=10), 4, lambda p: p.output_tokens == 4 and p.finish_reason == "length"),
        (SimOverride(output_tokens=3), 4, lambda p: p.output_tokens == 3 and p.finish_reason == "stop"),
        (SimOverride(ttft_ms=20, itl_ms=2), None, lambda p: p.ttft_s == 0.02 and set(p.itls_s) == {0.002}),
        (SimOverride(fault="error", status=429), None, lambda p: p.status == 429 and p.retry_after_s == 1.0),
        (SimOverride(fault="error", status=503), None, lambda p: p.status == 503 and p.retry_after_s is None),
        (SimOverride(fault="slow", output_tokens=3), None, lambda p: p.itls_s == (1.0, 1.0)),
        (SimOverride(fault="disconnect", after_chunks=5), None, lambda p: p.after_chunks == 5),
        (SimOverride(tokens_per_chunk=3), None, lambda p: p.tokens_per_chunk == 3),
    ],
)
def test_override_wins(override: SimOverride, max_tokens: int | None, check: object) -> None:
    cfg = SimConfig(faults=FaultRates(error=1.0), output_tokens=Distribution.fixed(16))
    plan = plan_request(cfg, override, random.Random(0), max_tokens=max_tokens)
    assert check(plan)  # type: ignore[operator]


def test_same_seed_same_plans() -> None:
    cfg = SimConfig(
        ttft_ms=Distribution(kind="lognormal", value=50),
        faults=FaultRates(error=0.3, hang=0.1),
        output_tokens=Distribution(kind="uniform", low=1, high=100),
    )
    a = [plan_request(cfg, None, r, max_tokens=None) for r in [random.Random(3)] for _ in range(50)]
    b = [plan_request(cfg, None, r, max_tokens=None) for r in [random.Random(3)] for _ in range(50)]
    assert a == b
    assert {p.fault for p in a} == {None, "error", "hang"}


@pytest.mark.parametrize(
    "dist",
    [
        Distribution.fixed(10),
        Distribution(kind="uniform", low=5, high=15),
        Distribution(kind="lognormal", value=10, sigma=0.5),
        Distribution(kind="fixed", value=10, tail_fraction=0.1, tail_factor=10),
    ],
)
def test_distribution_sample_mean_matches_mean(dist: Distribution) -> None:
    rng = random.Random(1)
    n = 20000
    assert sum(dist.sample(rng) for _ in range(n)) / n == pytest.approx(dist.mean, rel=0.05)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"faults": {"error": 0.6, "hang": 0.6}}, "more than 1"),
        ({"ttft_ms": {"kind": "uniform", "low": 3}}, "needs 'low' and 'high'"),
        ({"models": []}, "at least one model"),
        ({"error_status": 418}, "418"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_bad_config_names_the_problem(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        merge_config(SimConfig(), bad)


def test_merge_config_is_deep() -> None:
    cfg = merge_config(SimConfig(faults=FaultRates(error=0.1)), {"faults": {"hang": 0.2}})
    assert (cfg.faults.error, cfg.faults.hang) == (0.1, 0.2)


def test_merge_config_replaces_a_distribution_given_with_its_kind() -> None:
    tailed = SimConfig(ttft_ms=Distribution(kind="fixed", value=5, tail_fraction=0.2, tail_factor=10))
    assert merge_config(tailed, {"ttft_ms": {"kind": "fixed", "value": 7}}).ttft_ms == Distribution.fixed(7)
    assert merge_config(tailed, {"ttft_ms": {"value": 7}}).ttft_ms.tail_fraction == 0.2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("50", {"kind": "fixed", "value": 50.0}),
        ("uniform:2:8", {"kind": "uniform", "low": 2.0, "high": 8.0}),
        ("lognormal:50:0.4", {"kind": "lognormal", "value": 50.0, "sigma": 0.4}),
        ("lognormal:50", {"kind": "lognormal", "value": 50.0}),
        ("5,tail=0.01x20", {"kind": "fixed", "value": 5.0, "tail_fraction": 0.01, "tail_factor": 20.0}),
    ],
)
def test_parse_distribution(spec: str, expected: dict[str, object]) -> None:
    assert parse_distribution(spec) == expected
    Distribution.model_validate(expected)


@pytest.mark.parametrize("spec", ["", "uniform:1", "gauss:1:2", "5,tail=0.1", "5,foo=1x2", "x"])
def test_parse_distribution_rejects(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_distribution(spec)
