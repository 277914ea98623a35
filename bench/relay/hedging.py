"""Part 2: what hedging buys. Two sims, B with a heavy-tailed TTFT (5 % of requests 20× slower), the
same seeded open-loop request sequence through a gateway with hedging and one without (sims reset to
the same seeds): p99 TTFT, extra upstream requests (the sims' /sim/stats) and hedges (the gateway's
/metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

from bench.measure import metric_total, metrics_text, percentiles_ms, post
from bench.relay.load import Client, Scale, body, chat_requests, poisson_offsets

__all__ = ["HEDGE_SIM", "HEDGE_TAIL", "hedging"]

HEDGE_SIM = {"ttft_ms": "lognormal:100:0.25", "itl_ms": "5", "output_tokens": "8"}
HEDGE_TAIL = ",tail=0.05x20"  # backend B only: 5 % of first tokens 20× later


async def _hedge_arm(gw_url: str, sims: Sequence[str], scale: Scale, seed: int) -> dict[str, Any]:
    client = Client(gw_url)
    request = body()
    try:
        for s in sims:
            post(s + "/sim/reset")
        warm = await client.open_loop(
            [(t, None) for t in poisson_offsets(scale.warmup, scale.hedge_rate, seed + 100)], request
        )
        for s in sims:
            post(s + "/sim/reset")  # both arms then see the same draws for the same sequence
        hedges0 = {o: metric_total(metrics_text(gw_url), "switchyard_hedges_total", outcome=o) for o in _OUTCOMES}
        wasted0 = metric_total(metrics_text(gw_url), "switchyard_hedge_wasted_tokens_total")
        schedule = [(t, None) for t in poisson_offsets(scale.hedge_requests, scale.hedge_rate, seed)]
        started = perf_counter()
        replies = await client.open_loop(schedule, request)
        wall = perf_counter() - started
    finally:
        await client.aclose()
    upstream = [chat_requests(s) for s in sims]
    recs = [r.record for r in replies]
    ttfts = [r.ttft for r in recs if r.ok and r.ttft is not None]
    warm_ttfts = [r.record.ttft for r in warm if r.record.ok and r.record.ttft is not None]
    hedges = {
        o: metric_total(metrics_text(gw_url), "switchyard_hedges_total", outcome=o) - hedges0[o] for o in _OUTCOMES
    }
    return {
        "requests": len(recs),
        "errors": len(recs) - len(ttfts),
        "wall_s": wall,
        "ttft_ms": {**(percentiles_ms(ttfts, (50, 95, 99)) or {}), "max": max(ttfts) * 1000.0} if ttfts else None,
        "warmup_ttft_p95_ms": percentiles_ms(warm_ttfts, (95,)),
        "upstream_requests": {"a": upstream[0], "b_tailed": upstream[1]},
        "extra_upstream": (sum(upstream) - len(recs)) / len(recs) if recs else 0.0,
        "hedges": {k: int(v) for k, v in hedges.items()},
        "hedge_wasted_chunks": int(
            metric_total(metrics_text(gw_url), "switchyard_hedge_wasted_tokens_total") - wasted0
        ),
    }


_OUTCOMES = ("sent", "won", "over_budget", "no_backend")


async def hedging(
    gateways: dict[str, str], sims: Sequence[str], scale: Scale, seed: int, deadline: str, balancer: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"balancer": balancer, "deadline": deadline, "rate_rps": scale.hedge_rate}
    for arm in ("no_hedge", "hedge"):
        out[arm] = await _hedge_arm(gateways[arm], sims, scale, seed)
    h, n = out["hedge"], out["no_hedge"]
    if h["ttft_ms"] and n["ttft_ms"]:
        out["p99_ratio"] = n["ttft_ms"]["p99"] / h["ttft_ms"]["p99"]
        out["goals"] = {
            "p99_3x_lower": out["p99_ratio"] >= 3.0,
            "extra_upstream_le_10pct": h["extra_upstream"] <= 0.10,
        }
    warm = h["warmup_ttft_p95_ms"]
    if deadline == "derived" and warm:
        # What the gateway derives (1.5 × recent p95, at least 0.25 s), estimated from the client side.
        out["deadline_s_estimate"] = max(0.25, 1.5 * warm["p95"] / 1000.0)
    return out
