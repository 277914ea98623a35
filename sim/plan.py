"""What one simulated request will do: fault, timing and length, decided before any I/O.

`plan_request` draws everything from the configuration (or the request's `sim` override) and returns
a `Plan`; `delivery_schedule` turns per-token times into chunk delivery times, which is where token
bunching (several tokens per chunk) and transport bunching (several chunks per flush) happen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sim.config import Fault, FaultRates, SimConfig, SimOverride

__all__ = ["Chunk", "Plan", "choose_fault", "delivery_schedule", "plan_request"]

_FAULT_ORDER: tuple[Fault, ...] = ("error", "hang", "disconnect", "slow", "malformed_json", "malformed_sse")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One SSE chunk: sent `at_s` seconds after the request arrived, carrying `tokens` tokens."""

    at_s: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Plan:
    fault: Fault | None
    status: int
    retry_after_s: float | None
    hang_s: float
    ttft_s: float
    itls_s: tuple[float, ...]  # gap before each token after the first
    output_tokens: int
    finish_reason: str  # "stop" or "length"; a tool call overrides it with "tool_calls"
    tokens_per_chunk: int
    chunks_per_burst: int
    after_chunks: int
    tool: str | None  # a tool named by the override, if any
    call_tool: bool  # answer with a tool call when the request carries tools

    def schedule(self, units: int | None = None) -> list[Chunk]:
        """Chunk delivery times for `units` tokens (default: the planned output)."""
        n = self.output_tokens if units is None else units
        return delivery_schedule(
            self.ttft_s, self.itls_s[: max(n - 1, 0)], n, self.tokens_per_chunk, self.chunks_per_burst
        )

    @property
    def duration_s(self) -> float:
        """When the last token is ready, i.e. when a non-streamed response goes out."""
        return self.ttft_s + sum(self.itls_s[: max(self.output_tokens - 1, 0)])


def choose_fault(rates: FaultRates, u: float) -> Fault | None:
    """The fault whose cumulative probability band holds `u` (uniform in [0, 1)), else None."""
    edge = 0.0
    for name in _FAULT_ORDER:
        edge += getattr(rates, name)
        if u < edge:
            return name
    return None


def delivery_schedule(
    ttft_s: float,
    itls_s: tuple[float, ...] | list[float],
    n_tokens: int,
    tokens_per_chunk: int = 1,
    chunks_per_burst: int = 1,
) -> list[Chunk]:
    """Group `n_tokens` tokens (first ready at `ttft_s`, then after each gap in `itls_s`) into chunks.

    A chunk leaves when its last token is ready; a burst of chunks leaves when its last chunk is ready,
    so the token timeline is the same whatever the bunching, only its delivery is lumpier.
    """
    if n_tokens <= 0:
        return []
    ready = [ttft_s]
    for gap in itls_s[: n_tokens - 1]:
        ready.append(ready[-1] + gap)
    while len(ready) < n_tokens:  # fewer gaps than tokens: the rest arrive back to back
        ready.append(ready[-1])
    sizes = [min(tokens_per_chunk, n_tokens - i) for i in range(0, n_tokens, tokens_per_chunk)]
    ends = []
    last = -1
    for size in sizes:
        last += size
        ends.append(ready[last])
    chunks = []
    for i, size in enumerate(sizes):
        burst_end = min((i // chunks_per_burst + 1) * chunks_per_burst, len(sizes)) - 1
        chunks.append(Chunk(at_s=ends[burst_end], tokens=size))
    return chunks


def plan_request(
    config: SimConfig, override: SimOverride | None, rng: random.Random, *, max_tokens: int | None
) -> Plan:
    """Draw one request's behaviour; the override's fields win over the configuration."""
    o = override or SimOverride()
    fault = o.fault if o.fault is not None else choose_fault(config.faults, rng.random())
    status = o.status if o.status is not None else config.error_status
    retry_after = o.retry_after_s if o.retry_after_s is not None else config.retry_after_s
    ttft_s = (o.ttft_ms if o.ttft_ms is not None else config.ttft_ms.sample(rng)) / 1000.0
    wanted = o.output_tokens if o.output_tokens is not None else max(1, round(config.output_tokens.sample(rng)))
    finish = "stop"
    if max_tokens is not None and wanted > max_tokens:
        wanted, finish = max_tokens, "length"
    if fault == "slow":
        itls = (config.slow_itl_ms / 1000.0,) * max(wanted - 1, 0)
    elif o.itl_ms is not None:
        itls = (o.itl_ms / 1000.0,) * max(wanted - 1, 0)
    else:
        itl = config.itl_ms
        itls = tuple(itl.sample(rng) / 1000.0 for _ in range(max(wanted - 1, 0)))
    call_tool = o.tool is not None or config.tool_call_rate >= 1.0 or rng.random() < config.tool_call_rate
    return Plan(
        fault=fault,
        status=status,
        retry_after_s=retry_after if status == 429 else None,
        hang_s=config.hang_s,
        ttft_s=ttft_s,
        itls_s=itls,
        output_tokens=wanted,
        finish_reason=finish,
        tokens_per_chunk=o.tokens_per_chunk or config.tokens_per_chunk,
        chunks_per_burst=config.chunks_per_burst,
        after_chunks=o.after_chunks if o.after_chunks is not None else config.disconnect_after_chunks,
        tool=o.tool,
        call_tool=call_tool,
    )
