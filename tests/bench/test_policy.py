"""The load generator's decisions and arithmetic, without I/O (tables)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.loadgen import (
    Load,
    Price,
    RequestRecord,
    TargetRefused,
    arrival_gaps,
    bunching,
    coarse_ladder,
    distribution,
    meets_slo,
    parse_price,
    parse_slo,
    parse_target,
    refine_ladder,
    request_cost,
    step_holds,
    summarize,
)


def rec(
    ttft: float | None = 0.1,
    chunks: list[float] | None = None,
    out: int | None = None,
    e2e: float = 1.0,
    error: str | None = None,
    **kw: Any,
) -> RequestRecord:
    r = RequestRecord(index=0, start=10.0, end=10.0 + e2e, ttft=ttft, error=error, output_tokens=out, **kw)
    r.chunk_times = list(chunks if chunks is not None else ([ttft] if ttft is not None else []))
    return r


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ttft=500ms,tpot=50ms", {"ttft": 0.5, "tpot": 0.05}),
        ("e2e=2s", {"e2e": 2.0}),
        ("itl=250us", {"itl": 0.00025}),
        ("ttft=30", {"ttft": 0.03}),
        ("", {}),
    ],
)
def test_parse_slo(spec: str, expected: dict[str, float]) -> None:
    assert parse_slo(spec) == pytest.approx(expected)


@pytest.mark.parametrize("spec", ["ttft", "latency=1s", "ttft=fast", "ttft=1h"])
def test_parse_slo_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_slo(spec)


@pytest.mark.parametrize(
    ("record", "slo", "expected"),
    [
        (rec(ttft=0.4), {"ttft": 0.5}, True),
        (rec(ttft=0.6), {"ttft": 0.5}, False),
        (rec(ttft=0.1, chunks=[0.1, 0.2, 0.3], out=3), {"tpot": 0.05}, False),  # 100 ms per token
        (rec(ttft=0.1, chunks=[0.1, 0.12, 0.14], out=3), {"tpot": 0.05}, True),
        (rec(ttft=0.1, chunks=[0.1, 0.12, 0.5], out=3), {"itl": 0.1}, False),
        (rec(ttft=0.1, e2e=3.0), {"e2e": 2.0}, False),
        (rec(error="http_5xx"), {}, False),
    ],
)
def test_meets_slo(record: RequestRecord, slo: dict[str, float], expected: bool) -> None:
    assert meets_slo(record, slo) is expected


def test_tpot_uses_reported_tokens_not_chunks() -> None:
    # 2 chunks carrying 8 tokens: 7 gaps between tokens over 0.07 s
    assert rec(ttft=0.1, chunks=[0.1, 0.17], out=8).tpot == pytest.approx(0.01)
    assert rec(ttft=0.1, chunks=[0.1], out=1).tpot is None


@pytest.mark.parametrize(
    ("records", "per_chunk", "zero", "bunched"),
    [
        ([rec(chunks=[0.1, 0.11, 0.12, 0.13], out=4)], 1.0, 0.0, False),
        ([rec(chunks=[0.1, 0.14], out=8)], 4.0, 0.0, True),  # several tokens per chunk
        ([rec(chunks=[0.1, 0.1, 0.2, 0.2], out=4)], 1.0, 2 / 3, True),  # chunks flushed together
        ([rec(chunks=[0.1, 0.1, 0.2, 0.3, 0.4], out=5)], 1.0, 0.25, True),
        ([rec(chunks=[0.1, 0.1, 0.2, 0.3, 0.4, 0.5], out=6)], 1.0, 0.2, False),
    ],
)
def test_bunching(records: list[RequestRecord], per_chunk: float, zero: float, bunched: bool) -> None:
    b = bunching(records)
    assert b is not None
    assert b["tokens_per_chunk"] == pytest.approx(per_chunk)
    assert b["zero_gap_fraction"] == pytest.approx(zero)
    assert b["bunched"] is bunched


def test_distribution_percentiles_in_ms() -> None:
    d = distribution([i / 1000 for i in range(1, 101)])
    assert d is not None and d["n"] == 100
    assert d["p50"] == pytest.approx(50.5) and d["p99"] == pytest.approx(99.01) and d["max"] == pytest.approx(100)
    assert distribution([]) is None


def test_summarize_counts_errors_goodput_cache_tools_and_cost() -> None:
    records = [
        rec(
            ttft=0.1,
            out=10,
            prompt_tokens=100,
            cache="miss",
            tools_in=50,
            tools_out=5,
            expected_tool="a",
            tool_called="a",
            priority="interactive",
        ),
        rec(
            ttft=0.9,
            out=10,
            prompt_tokens=100,
            cache="semantic",
            expected_tool="b",
            tool_called="c",
            priority="batch",
        ),
        rec(error="http_429", priority="batch"),
        rec(error="timeout", priority="batch"),
    ]
    s = summarize(records, wall_s=2.0, slo={"ttft": 0.5}, price=Price(1.0, 2.0))
    assert s["requests"] == 4 and s["ok"] == 2 and s["errors"] == {"http_429": 1, "timeout": 1}
    assert s["error_rate"] == 0.5
    assert s["throughput"]["requests_per_s"] == 1.0 and s["throughput"]["output_tokens_per_s"] == 10.0
    assert s["goodput"]["fraction"] == 0.25 and s["goodput"]["requests_per_s"] == 0.5
    assert s["cache"]["hit_ratio"] == 0.5
    assert s["tools"]["mean_in"] == 50 and s["tools"]["mean_out"] == 5 and s["tools"]["expected_tool_called"] == 0.5
    # a miss costs 100 in + 10 out; a hit costs nothing
    assert s["cost_usd"]["total"] == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert set(s["by_priority"]) == {"interactive", "batch"} and s["by_priority"]["batch"]["errors"] == 2


@pytest.mark.parametrize(
    ("summary", "previous", "expected"),
    [
        ({"error_rate": 0.0, "goodput": {"fraction": 0.95}, "throughput": {"requests_per_s": 10}}, None, True),
        ({"error_rate": 0.0, "goodput": {"fraction": 0.5}, "throughput": {"requests_per_s": 10}}, None, False),
        ({"error_rate": 0.2, "throughput": {"requests_per_s": 10}}, None, False),
        ({"error_rate": 0.0, "throughput": {"requests_per_s": 20}}, {"throughput": {"requests_per_s": 10}}, True),
        ({"error_rate": 0.0, "throughput": {"requests_per_s": 10.2}}, {"throughput": {"requests_per_s": 10}}, False),
    ],
)
def test_step_holds(summary: dict[str, Any], previous: dict[str, Any] | None, expected: bool) -> None:
    assert step_holds(summary, previous) is expected


def test_ladders() -> None:
    assert coarse_ladder(1, 2, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert coarse_ladder(100, 1.5, 400) == [100, 150, 225, 337.5]
    assert refine_ladder(16, 32, 3, integer=True) == [20.0, 24.0, 28.0]
    assert refine_ladder(4, 5, 3, integer=True) == []  # nothing strictly between
    with pytest.raises(ValueError):
        coarse_ladder(0, 2, 8)


@pytest.mark.parametrize(("arrival", "burstiness"), [("poisson", 1.0), ("gamma", 3.0), ("constant", 1.0)])
def test_arrival_gaps_average_to_the_rate(arrival: Any, burstiness: float) -> None:
    gaps = arrival_gaps(100.0, arrival, random.Random(1), burstiness)
    sample = [next(gaps) for _ in range(20000)]
    mean = sum(sample) / len(sample)
    assert mean == pytest.approx(0.01, rel=0.05)
    cv = (sum((g - mean) ** 2 for g in sample) / len(sample)) ** 0.5 / mean
    assert cv == pytest.approx({"poisson": 1.0, "gamma": 3.0, "constant": 0.0}[arrival], abs=0.15)


def test_load_label() -> None:
    assert Load("concurrency", 8).label == "c=8" and Load("rate", 2.5).label == "rate=2.5/s"


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://127.0.0.1:8090/v1", set(), True),
        ("http://localhost:8090", set(), True),
        ("http://[::1]:8090/v1", set(), True),
        ("http://127.5.0.1:8090/v1", set(), True),
        ("http://10.0.0.8:8000/v1", set(), False),
        ("http://api.example.com/v1", set(), False),
        ("http://api.example.com/v1", {"api.example.com"}, True),
        ("https://127.0.0.1/v1", set(), False),
    ],
)
def test_targets_are_loopback_unless_named(url: str, allowed: set[str], ok: bool) -> None:
    if ok:
        t = parse_target(url, frozenset(allowed))
        assert t.path("/chat/completions").endswith("/chat/completions")
    else:
        with pytest.raises(TargetRefused):
            parse_target(url, frozenset(allowed))


def test_target_paths() -> None:
    t = parse_target("http://127.0.0.1:9000")
    assert (t.port, t.path("/chat/completions")) == (9000, "/v1/chat/completions")


@pytest.mark.parametrize(
    ("prompt", "out", "cache", "expected"),
    [
        (1000, 100, None, (1000 * 0.15 + 100 * 0.6) / 1e6),
        (1000, 100, "miss", (1000 * 0.15 + 100 * 0.6) / 1e6),
        (1000, 100, "exact", 0.0),
        (None, None, None, None),
    ],
)
def test_request_cost(prompt: int | None, out: int | None, cache: str | None, expected: float | None) -> None:
    cost = request_cost(parse_price("in=0.15,out=0.60"), prompt, out, cache)
    assert cost == (pytest.approx(expected) if expected is not None else None)


def test_parse_price_rejects_unknown_terms() -> None:
    with pytest.raises(ValueError):
        parse_price("input=1")


@pytest.mark.parametrize(
    ("status", "hit"),
    [
        ("exact", True),
        ("semantic", True),
        ("Semantic", True),
        ("hit", True),
        ("miss", False),
        ("bypass", False),
        (None, False),
    ],
)
def test_cache_statuses(status: str | None, hit: bool) -> None:
    from bench.loadgen.record import is_cache_hit

    assert is_cache_hit(status) is hit
