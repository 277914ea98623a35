"""Part 3: what admission control buys. A ramp of open-loop load, interactive and batch mixed, against
a sim that serves a few requests at once (the rest queue, so TTFT grows with load), through a gateway
with a TTFT budget and one without: interactive p95 TTFT, batch refusals (503 with Retry-After),
goodput (requests per second within their class's TTFT SLO)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from bench.loadgen.shapes import arrival_gaps
from bench.measure import percentiles_ms, post
from bench.relay.load import Client, Reply, Scale, body, poisson_offsets

__all__ = [
    "ADMIT_SIM",
    "ADMIT_SLOTS",
    "INTERACTIVE_BUDGET_S",
    "SLO_S",
    "admission",
    "capacity_rps",
    "class_summary",
    "ramp_schedule",
]

# Part 3: 4 generations at once; mean service ≈ 40 ms + 23 × 4 ms, so ≈ 30 requests/s of capacity.
ADMIT_SLOTS, ADMIT_TTFT_MS, ADMIT_SIGMA, ADMIT_ITL_MS, ADMIT_TOKENS = 4, 40.0, 0.2, 4.0, 24
ADMIT_SIM = {
    "ttft_ms": f"lognormal:{ADMIT_TTFT_MS:g}:{ADMIT_SIGMA:g}",
    "itl_ms": f"{ADMIT_ITL_MS:g}",
    "output_tokens": str(ADMIT_TOKENS),
}
INTERACTIVE_BUDGET_S = 0.5
SLO_S = {"interactive": INTERACTIVE_BUDGET_S, "batch": 10 * INTERACTIVE_BUDGET_S}


def capacity_rps(slots: int, ttft_ms: float, sigma: float, itl_ms: float, tokens: int) -> float:
    """Requests per second a sim with `slots` generations at once finishes: slots / mean service time."""
    service_s = (ttft_ms * math.exp(sigma * sigma / 2) + (tokens - 1) * itl_ms) / 1000.0
    return slots / service_s


def ramp_schedule(
    rates: Sequence[float], step_s: float, interactive_share: float, seed: int
) -> list[tuple[float, int, str]]:
    """(send offset in seconds, step index, priority) for Poisson arrivals at each step's rate."""
    rng = random.Random(seed)
    out: list[tuple[float, int, str]] = []
    for step, rate in enumerate(rates):
        gaps = arrival_gaps(rate, "poisson", random.Random(seed + 1 + step))
        t = step * step_s + next(gaps)
        while t < (step + 1) * step_s:
            out.append((t, step, "interactive" if rng.random() < interactive_share else "batch"))
            t += next(gaps)
    return out


def class_summary(replies: Sequence[Reply], slo_s: float, wall_s: float) -> dict[str, Any]:
    """One priority class of a ramp: counts, refusals, TTFT of the answered ones, goodput."""
    recs = [r.record for r in replies]
    ok = [r for r in recs if r.ok and r.ttft is not None]
    refused = [r for r in replies if r.record.status == 503]
    good = sum(1 for r in ok if r.ttft is not None and r.ttft <= slo_s)
    return {
        "requests": len(recs),
        "ok": len(ok),
        "refused_503": len(refused),
        "refused_with_retry_after": sum(1 for r in refused if r.retry_after is not None),
        "other_errors": len(recs) - len(ok) - len(refused),
        "ttft_ms": percentiles_ms([r.ttft for r in ok if r.ttft is not None], (50, 95, 99)),
        "within_slo": good,
        "goodput_rps": good / wall_s if wall_s > 0 else 0.0,
    }


async def _admission_arm(
    gw_url: str, sim_url: str, rates: Sequence[float], scale: Scale, share: float, seed: int
) -> dict[str, Any]:
    client = Client(gw_url)
    post(sim_url + "/sim/reset")
    try:
        await client.open_loop([(t, "interactive") for t in poisson_offsets(20, rates[0], seed + 7)], body())
        plan = ramp_schedule(rates, scale.step_s, share, seed)
        started = perf_counter()
        replies = await client.open_loop([(t, p) for t, _, p in plan], body())
        wall = perf_counter() - started
    finally:
        await client.aclose()
    steps = []
    for i, rate in enumerate(rates):
        mine = [r for r, (_, step, _) in zip(replies, plan, strict=True) if step == i]
        inter = [r.record.ttft for r in mine if r.record.priority == "interactive" and r.record.ttft is not None]
        batch = [r for r in mine if r.record.priority == "batch"]
        steps.append(
            {
                "rate_rps": rate,
                "interactive_ttft_p95_ms": (percentiles_ms(inter, (95,)) or {}).get("p95"),
                "batch_refused": sum(1 for r in batch if r.record.status == 503),
                "batch_requests": len(batch),
            }
        )
    by_class = {p: class_summary([r for r in replies if r.record.priority == p], SLO_S[p], wall) for p in SLO_S}
    good = sum(c["within_slo"] for c in by_class.values())
    return {"wall_s": wall, **by_class, "goodput_rps": good / wall, "steps": steps}


async def admission(gateways: dict[str, str], sim_url: str, scale: Scale, seed: int, share: float) -> dict[str, Any]:
    cap = capacity_rps(ADMIT_SLOTS, ADMIT_TTFT_MS, ADMIT_SIGMA, ADMIT_ITL_MS, ADMIT_TOKENS)
    rates = [round(cap * f, 1) for f in scale.ramp]
    out: dict[str, Any] = {
        "capacity_rps": cap,
        "ramp_rps": rates,
        "step_s": scale.step_s,
        "interactive_share": share,
        "slo_s": SLO_S,
        "ttft_budget_s": {"interactive": INTERACTIVE_BUDGET_S, "batch_shed_at": INTERACTIVE_BUDGET_S * 0.5},
    }
    for arm in ("no_admission", "admission"):
        out[arm] = await _admission_arm(gateways[arm], sim_url, rates, scale, share, seed)
    a, n = out["admission"], out["no_admission"]
    ai, ni = a["interactive"]["ttft_ms"], n["interactive"]["ttft_ms"]
    if ai and ni:
        out["interactive_p95_ratio"] = ni["p95"] / ai["p95"]
        out["goals"] = {
            "interactive_p95_within_budget": ai["p95"] <= INTERACTIVE_BUDGET_S * 1000.0,
            "batch_refusals_carry_retry_after": a["batch"]["refused_503"] == a["batch"]["refused_with_retry_after"],
        }
    return out
