"""`bench.relay`: its pure helpers with tables, and one `--quick` run whose JSON summary must be
complete and self-consistent (request accounting, refusals, baselines). Timing goals are not checked
here: they are what the full run reports, on whatever machine runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from bench.loadgen.record import RequestRecord
from bench.relay import QUICK, Reply, added, capacity_rps, class_summary, pcts, per_chunk, ramp_schedule
from tests.support.processes import REPO


@pytest.mark.parametrize(
    ("values", "qs", "expected"),
    [
        ([], (50, 99), None),
        ([0.001], (50,), {"p50": 1.0}),
        ([0.001, 0.002, 0.003], (50, 95), {"p50": 2.0, "p95": 2.9}),
    ],
)
def test_percentiles_in_milliseconds(values: list[float], qs: tuple[float, ...], expected: Any) -> None:
    got = pcts(values, qs)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("gateway", "direct", "expected"),
    [
        ({"p50": 1.5, "p99": 4.0}, {"p50": 0.5, "p99": 1.0}, {"p50": 1.0, "p99": 3.0}),
        ({"p50": 1.0}, {"p50": 1.0, "p99": 2.0}, {"p50": 0.0}),
        (None, {"p50": 1.0}, None),
    ],
)
def test_added_is_gateway_minus_direct(gateway: Any, direct: Any, expected: Any) -> None:
    assert added(gateway, direct) == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [([], None), ([0.1], None), ([0.1, 0.3], 0.2), ([0.0, 0.0, 0.0, 0.3], 0.1)],
)
def test_time_per_chunk_after_the_first(times: list[float], expected: float | None) -> None:
    got = per_chunk(times)
    assert got == (None if expected is None else pytest.approx(expected))


def test_capacity_is_slots_over_mean_service_time() -> None:
    assert capacity_rps(4, 100.0, 0.0, 0.0, 1) == pytest.approx(40.0)
    assert capacity_rps(2, 40.0, 0.0, 5.0, 13) == pytest.approx(20.0)  # 40 ms + 12 × 5 ms = 100 ms


def test_ramp_schedule_is_seeded_and_follows_the_rates() -> None:
    plan = ramp_schedule([20.0, 80.0], 5.0, 0.25, seed=3)
    assert plan == ramp_schedule([20.0, 80.0], 5.0, 0.25, seed=3)
    assert [t for t, _, _ in plan] == sorted(t for t, _, _ in plan)
    per_step = Counter(step for _, step, _ in plan)
    assert 60 <= per_step[0] <= 140 and 300 <= per_step[1] <= 500  # Poisson around 100 and 400
    assert all(step * 5.0 <= t < (step + 1) * 5.0 for t, step, _ in plan)
    share = sum(p == "interactive" for _, _, p in plan) / len(plan)
    assert 0.18 <= share <= 0.32


def _reply(status: int, ttft: float | None, retry_after: float | None = None) -> Reply:
    rec = RequestRecord(index=0, status=status, ttft=ttft, error=None if status == 200 else "http_5xx")
    return Reply(rec, retry_after)


def test_class_summary_counts_refusals_and_goodput() -> None:
    replies = [_reply(200, 0.1), _reply(200, 0.9), _reply(503, None, 2.0), _reply(503, None), _reply(502, None)]
    s = class_summary(replies, slo_s=0.5, wall_s=2.0)
    assert (s["requests"], s["ok"], s["refused_503"], s["refused_with_retry_after"]) == (5, 2, 2, 1)
    assert s["other_errors"] == 1 and s["within_slo"] == 1 and s["goodput_rps"] == 0.5


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.relay", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_quick_run_summary(quick: dict[str, Any]) -> None:
    assert quick["bench"] == "relay" and quick["quick"] is True
    assert quick["parts"] == ["overhead", "hedging", "admission"]
    assert set(quick["seconds"]) == {"start", "overhead", "hedging", "admission"}
    assert len(quick["loadavg"]["before"]) == 3


@pytest.mark.slow
def test_quick_overhead_compares_like_with_like(quick: dict[str, Any]) -> None:
    o = quick["overhead"]
    n = QUICK.rounds * (QUICK.paced + QUICK.burst)
    for side in ("direct", "gateway"):
        assert o[side]["errors"] == 0 and o[side]["requests"] == n
        assert 0 < o[side]["ttft_ms"]["p50"] < 50
        assert 1.0 < o[side]["paced_gap_ms"]["p50"] < 10.0  # the sim paces chunks 2 ms apart
    assert set(o["added"]) == {"ttft_ms", "paced_gap_ms", "back_to_back_per_chunk_ms"}
    assert set(o["goals"]) == {"ttft_p50_le_1ms", "paced_gap_p50_le_0_2ms", "back_to_back_per_chunk_p50_le_0_2ms"}
    added_ttft = o["added"]["ttft_ms"]["p50"]
    assert added_ttft == pytest.approx(o["gateway"]["ttft_ms"]["p50"] - o["direct"]["ttft_ms"]["p50"])


@pytest.mark.slow
def test_quick_hedging_accounts_for_every_upstream_request(quick: dict[str, Any]) -> None:
    h = quick["hedging"]
    assert h["deadline"] == "derived" and h["balancer"] == "least_outstanding"
    for arm in ("no_hedge", "hedge"):
        x = h[arm]
        assert x["requests"] == QUICK.hedge_requests and x["errors"] == 0
        assert x["ttft_ms"]["p50"] <= x["ttft_ms"]["p99"] <= x["ttft_ms"]["max"]
        assert min(x["upstream_requests"].values()) > 0  # both backends served
    none = h["no_hedge"]
    assert none["hedges"]["sent"] == 0 and none["extra_upstream"] == 0
    assert sum(none["upstream_requests"].values()) == none["requests"]
    hedged = h["hedge"]
    upstream = sum(hedged["upstream_requests"].values())
    # A hedge cancelled before it was written never reaches a sim, hence ≤ rather than ==.
    assert hedged["requests"] <= upstream <= hedged["requests"] + hedged["hedges"]["sent"]
    assert hedged["hedges"]["won"] <= hedged["hedges"]["sent"]
    assert "p99_ratio" in h and set(h["goals"]) == {"p99_3x_lower", "extra_upstream_le_10pct"}


@pytest.mark.slow
def test_quick_admission_sheds_only_with_a_budget(quick: dict[str, Any]) -> None:
    a = quick["admission"]
    assert len(a["ramp_rps"]) == len(QUICK.ramp) and a["capacity_rps"] > 0
    admitted, unlimited = a["admission"], a["no_admission"]
    for cls in ("interactive", "batch"):
        assert admitted[cls]["requests"] == unlimited[cls]["requests"] > 0  # the same seeded schedule
        assert unlimited[cls]["refused_503"] == 0 and unlimited[cls]["other_errors"] == 0
        assert admitted[cls]["other_errors"] == 0
    batch = admitted["batch"]
    assert batch["refused_503"] == batch["refused_with_retry_after"]
    assert [s["rate_rps"] for s in admitted["steps"]] == a["ramp_rps"]
    for arm in (admitted, unlimited):
        within = arm["interactive"]["within_slo"] + arm["batch"]["within_slo"]
        assert arm["goodput_rps"] == pytest.approx(within / arm["wall_s"])
