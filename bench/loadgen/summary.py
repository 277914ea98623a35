"""From per-request records to the numbers a run reports (pure; tested with tables).

Latencies are reported in milliseconds. ITLs are the gaps between content chunks as the client saw
them; TPOT is (last content chunk − first) / (output tokens − 1), so the two differ when a server
bunches several tokens into one chunk, and that difference is how bunching is detected.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bench.loadgen.prices import Price, request_cost
from bench.loadgen.record import RequestRecord, is_cache_hit
from bench.loadgen.slo import meets_slo

__all__ = [
    "BUNCHED_TOKENS_PER_CHUNK",
    "BUNCHED_ZERO_GAP_FRACTION",
    "ZERO_GAP_S",
    "bunching",
    "distribution",
    "error_kind",
    "summarize",
]

ZERO_GAP_S = 1e-4  # chunks closer than this arrived in the same read: the server flushed them together
BUNCHED_TOKENS_PER_CHUNK = 1.5
BUNCHED_ZERO_GAP_FRACTION = 0.25


def error_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"


def distribution(values: Sequence[float] | np.ndarray[Any, Any], scale: float = 1000.0) -> dict[str, float] | None:
    """p50/p90/p95/p99/mean/max of `values` (seconds), times `scale` (default: to ms)."""
    if len(values) == 0:
        return None
    a = np.asarray(values, dtype=float) * scale
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {
        "n": int(a.size),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def bunching(records: Iterable[RequestRecord]) -> dict[str, Any] | None:
    """Tokens per content chunk and the share of near-zero chunk gaps; a verdict from both."""
    tokens = chunks = zero = gaps = 0
    for r in records:
        n = len(r.chunk_times)
        if not r.stream or n == 0:
            continue
        chunks += n
        tokens += r.output_tokens if r.output_tokens is not None else n
        t = r.chunk_times
        for a, b in itertools.pairwise(t):
            gaps += 1
            zero += (b - a) < ZERO_GAP_S
    if chunks == 0:
        return None
    per_chunk = tokens / chunks
    zero_fraction = zero / gaps if gaps else 0.0
    return {
        "tokens_per_chunk": per_chunk,
        "zero_gap_fraction": zero_fraction,
        "bunched": per_chunk >= BUNCHED_TOKENS_PER_CHUNK or zero_fraction >= BUNCHED_ZERO_GAP_FRACTION,
    }


def _group(records: Sequence[RequestRecord], wall_s: float) -> dict[str, Any]:
    ok = [r for r in records if r.error is None]
    ttft = [r.ttft for r in ok if r.stream and r.ttft is not None]
    out: dict[str, Any] = {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "ttft_ms": distribution(ttft),
        "e2e_ms": distribution([r.e2e for r in ok]),
    }
    cache = Counter(r.cache for r in records if r.cache is not None)
    if cache:
        out["cache_hit_ratio"] = sum(v for k, v in cache.items() if is_cache_hit(k)) / sum(cache.values())
    return out


def summarize(
    records: Sequence[RequestRecord], wall_s: float, slo: dict[str, float] | None = None, price: Price | None = None
) -> dict[str, Any]:
    """Everything a run reports about `records`, collected over `wall_s` seconds."""
    wall_s = max(wall_s, 1e-9)
    ok = [r for r in records if r.error is None]
    stream_ok = [r for r in ok if r.stream]
    itls = [g for r in stream_ok for g in r.itls]
    tpots = [t for r in stream_ok if (t := r.tpot) is not None]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    summary: dict[str, Any] = {
        "requests": len(records),
        "ok": len(ok),
        "errors": dict(Counter(r.error for r in records if r.error is not None)),
        "error_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
        "wall_s": wall_s,
        "throughput": {
            "requests_per_s": len(ok) / wall_s,
            "output_tokens_per_s": out_tokens / wall_s,
            "input_tokens_per_s": in_tokens / wall_s,
        },
        "tokens": {"input": in_tokens, "output": out_tokens},
        "ttft_ms": distribution([r.ttft for r in stream_ok if r.ttft is not None]),
        "itl_ms": distribution(itls),
        "tpot_ms": distribution(tpots),
        "e2e_ms": distribution([r.e2e for r in ok]),
        "bunching": bunching(stream_ok),
        # How late the generator sent requests relative to its own schedule: if this grows, the
        # generator, not the target, is the bottleneck.
        "send_lag_ms": distribution([max(r.start - r.scheduled, 0.0) for r in records if r.scheduled > 0]),
    }
    if slo:
        good = sum(meets_slo(r, slo) for r in records)
        summary["goodput"] = {
            "slo": {k: v * 1000 for k, v in slo.items()},
            "requests_per_s": good / wall_s,
            "fraction": good / len(records) if records else 0.0,
        }
    cache = Counter(r.cache for r in records if r.cache is not None)
    if cache:
        hits = sum(v for k, v in cache.items() if is_cache_hit(k))
        summary["cache"] = {"statuses": dict(cache), "hit_ratio": hits / sum(cache.values())}
    with_tools = [r for r in records if r.tools_in is not None]
    expected = [r for r in ok if r.expected_tool is not None]
    if with_tools or expected:
        summary["tools"] = {
            "requests_with_header": len(with_tools),
            "mean_in": float(np.mean([r.tools_in for r in with_tools])) if with_tools else None,
            "mean_out": float(np.mean([r.tools_out for r in with_tools])) if with_tools else None,
            "expected_tool_called": (
                sum(r.tool_called == r.expected_tool for r in expected) / len(expected) if expected else None
            ),
        }
    if price is not None:
        costs = [c for r in ok if (c := request_cost(price, r.prompt_tokens, r.output_tokens, r.cache)) is not None]
        if costs:
            summary["cost_usd"] = {"total": float(sum(costs)), "per_request": float(np.mean(costs))}
    for key, attr in (("by_tag", "tag"), ("by_priority", "priority")):
        labels = sorted({getattr(r, attr) for r in records if getattr(r, attr)})
        if len(labels) > 1 or (labels and key == "by_priority"):
            summary[key] = {lab: _group([r for r in records if getattr(r, attr) == lab], wall_s) for lab in labels}
    return summary
