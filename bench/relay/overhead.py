"""Part 1: what the relay adds. Streams at concurrency 1 from a sim directly and through the gateway,
in alternating rounds so drift hits both: added time to the first content chunk, added gap between
paced chunks, and the relay's cost per chunk when chunks come back to back; and the CPU each process
spends per request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from bench.measure import cpu_seconds, percentiles_ms
from bench.relay.load import Client, Scale, body

__all__ = ["BURST", "OVERHEAD_SIM", "CpuMeter", "added", "overhead", "per_chunk"]

OVERHEAD_SIM = {"ttft_ms": "0", "itl_ms": "2", "output_tokens": "16"}  # zero TTFT: the rest is overhead
BURST = {"itl_ms": 0, "output_tokens": 64}  # per-request sim override: chunks back to back


def added(gateway: dict[str, float] | None, direct: dict[str, float] | None) -> dict[str, float] | None:
    """Gateway minus direct, percentile by percentile."""
    if gateway is None or direct is None:
        return None
    return {k: gateway[k] - direct[k] for k in gateway if k in direct}


def per_chunk(chunk_times: Sequence[float]) -> float | None:
    """Seconds per chunk after the first: (last − first) / (chunks − 1)."""
    if len(chunk_times) < 2:
        return None
    return (chunk_times[-1] - chunk_times[0]) / (len(chunk_times) - 1)


class CpuMeter:
    """CPU a process spends on blocks of requests, per request (from /proc; empty elsewhere)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.spent: dict[str, float] = {}
        self.count: dict[str, int] = {}

    @contextlib.contextmanager
    def block(self, kind: str, requests: int) -> Iterator[None]:
        before = cpu_seconds(self.pid) if self.pid else None
        yield
        after = cpu_seconds(self.pid) if self.pid else None
        if before is not None and after is not None:
            self.spent[kind] = self.spent.get(kind, 0.0) + after - before
            self.count[kind] = self.count.get(kind, 0) + requests

    def per_request_ms(self) -> dict[str, float]:
        return {k: 1000.0 * v / self.count[k] for k, v in self.spent.items() if self.count[k]}


async def overhead(
    direct_url: str, gateway_url: str, scale: Scale, pids: dict[str, int | None] | None = None
) -> dict[str, Any]:
    """Part 1; `pids` ("gateway", "sim") adds the CPU each process spends per request."""
    clients = {"direct": Client(direct_url), "gateway": Client(gateway_url)}
    # What each request costs the process that does the serving work: the gateway on its rounds (the
    # sim's share is the same both ways), the sim on the direct rounds, as a yardstick.
    meters = {"gateway": CpuMeter((pids or {}).get("gateway")), "direct": CpuMeter((pids or {}).get("sim"))}
    ttft: dict[str, list[float]] = {k: [] for k in clients}
    gaps: dict[str, list[float]] = {k: [] for k in clients}
    cost: dict[str, list[float]] = {k: [] for k in clients}
    errors = dict.fromkeys(clients, 0)
    paced, burst = body(), body(BURST)
    try:
        for c in clients.values():  # connections and first-use costs, not measured
            for _ in range(10):
                await c.one(paced)
                await c.one(burst)
        for r in range(scale.rounds):
            for name in list(clients) if r % 2 == 0 else list(reversed(clients)):
                c, meter = clients[name], meters[name]
                with meter.block("paced", scale.paced):
                    paced_recs = [(await c.one(paced)).record for _ in range(scale.paced)]
                with meter.block("back_to_back", scale.burst):
                    burst_recs = [(await c.one(burst)).record for _ in range(scale.burst)]
                for rec in paced_recs:
                    if not rec.ok or rec.ttft is None:
                        errors[name] += 1
                        continue
                    ttft[name].append(rec.ttft)
                    gaps[name].extend(rec.itls)
                for rec in burst_recs:
                    if not rec.ok or rec.ttft is None or (pc := per_chunk(rec.chunk_times)) is None:
                        errors[name] += 1
                        continue
                    ttft[name].append(rec.ttft)
                    cost[name].append(pc)
    finally:
        for c in clients.values():
            await c.aclose()
    out: dict[str, Any] = {}
    for name in clients:
        out[name] = {
            "ttft_ms": percentiles_ms(ttft[name]),
            "paced_gap_ms": percentiles_ms(gaps[name]),
            "back_to_back_per_chunk_ms": percentiles_ms(cost[name]),
            "requests": len(ttft[name]),
            "errors": errors[name],
        }
    out["cpu_ms_per_request"] = {
        "gateway": meters["gateway"].per_request_ms(),
        "sim_direct": meters["direct"].per_request_ms(),
        "chunks_per_request": {"paced": int(OVERHEAD_SIM["output_tokens"]), "back_to_back": BURST["output_tokens"]},
    }
    g, d = out["gateway"], out["direct"]
    out["added"] = {
        "ttft_ms": added(g["ttft_ms"], d["ttft_ms"]),
        "paced_gap_ms": added(g["paced_gap_ms"], d["paced_gap_ms"]),
        "back_to_back_per_chunk_ms": added(g["back_to_back_per_chunk_ms"], d["back_to_back_per_chunk_ms"]),
    }
    a = out["added"]
    out["goals"] = {
        "ttft_p50_le_1ms": a["ttft_ms"] is not None and a["ttft_ms"]["p50"] <= 1.0,
        "paced_gap_p50_le_0_2ms": a["paced_gap_ms"] is not None and a["paced_gap_ms"]["p50"] <= 0.2,
        "back_to_back_per_chunk_p50_le_0_2ms": (
            a["back_to_back_per_chunk_ms"] is not None and a["back_to_back_per_chunk_ms"]["p50"] <= 0.2
        ),
    }
    return out
