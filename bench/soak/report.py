"""The soak's JSON summary: outcomes by kind, memory growth, latency drift, what the gateway counted."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.measure import metric_total, percentile
from bench.soak.memory import growth, trace

__all__ = ["EXPECTED", "Book", "Outcome", "summarize"]

# Results that are the gateway working: a stream the client left, a stored response past its TTL.
EXPECTED = ("ok", "abandoned", "expired")


@dataclass
class Outcome:
    at: float  # seconds since the start of the run
    kind: str
    latency: float
    result: str  # ok, abandoned, expired, error_status:<code>, error_event, truncated, transport, timeout


@dataclass
class Book:
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[tuple[float, float]] = field(default_factory=list)
    # The gateway's child processes by name (sy-engine, sy-span-export, ...): RSS samples of each name's sum.
    children: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def summarize(
    args: argparse.Namespace, book: Book, metrics: str, elapsed: float, sink: dict[str, int] | None = None
) -> dict[str, Any]:
    """`sink` is what the OTLP sink received (None: traces were off)."""
    warmup = 0.1 * elapsed
    outcomes = book.outcomes
    counts = Counter(o.result.split(":")[0] for o in outcomes)
    short = [(o.kind, ":".join(o.result.split(":")[:2])) for o in outcomes]
    unexpected = [o for o in outcomes if o.kind != "fault" and o.result not in EXPECTED]
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, result in short:
        by_kind[kind][result] += 1
    # Latency of the requests that ran to their end (faults and abandoned streams excluded), by window.
    timed = [o for o in outcomes if o.result == "ok" and o.at >= warmup]
    window = max(5.0, (elapsed - warmup) / 10)  # a tenth of the measured run
    first = [o.latency for o in timed if o.at < warmup + window]
    last = [o.latency for o in timed if o.at >= elapsed - window]
    engine_first = [o.latency for o in timed if o.kind == "engine" and o.at < warmup + window]
    engine_last = [o.latency for o in timed if o.kind == "engine" and o.at >= elapsed - window]
    p99_first, p99_last = percentile(first, 0.99, 0.0), percentile(last, 0.99, 0.0)
    by_kind_latency = {}
    for kind in sorted({o.kind for o in timed}):
        mine = [o for o in timed if o.kind == kind]
        by_kind_latency[kind] = {
            "p50_s": round(percentile([o.latency for o in mine], 0.5, 0.0), 4),
            "p99_first_s": round(percentile([o.latency for o in mine if o.at < warmup + window], 0.99, 0.0), 4),
            "p99_last_s": round(percentile([o.latency for o in mine if o.at >= elapsed - window], 0.99, 0.0), 4),
        }
    return {
        "bench": "soak",
        "minutes": round(elapsed / 60, 2),
        "rps_target": args.rps,
        "requests": len(outcomes),
        "rps": round(len(outcomes) / elapsed, 2),
        "results": dict(counts),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "unexpected_errors": len(unexpected),
        "error_rate": round(len(unexpected) / max(1, len(outcomes)), 5),
        "unexpected_examples": dict(Counter(f"{o.kind}:{o.result}" for o in unexpected).most_common(5)),
        "memory_gateway": growth(book.memory, warmup),
        "memory_trace_mb": trace(book.memory, elapsed),
        "memory_children": {name: growth(samples, warmup) for name, samples in sorted(book.children.items())},
        "latency": {
            "window_s": round(window, 1),
            "p50_first_s": round(percentile(first, 0.5, 0.0), 4),
            "p50_last_s": round(percentile(last, 0.5, 0.0), 4),
            "p99_first_s": round(p99_first, 4),
            "p99_last_s": round(p99_last, 4),
            "p99_drift": round(p99_last / p99_first, 3) if p99_first else None,
            "engine_p99_first_s": round(percentile(engine_first, 0.99, 0.0), 4),
            "engine_p99_last_s": round(percentile(engine_last, 0.99, 0.0), 4),
            "by_kind": by_kind_latency,
        },
        "gateway": {
            "cache_hits": metric_total(metrics, "switchyard_cache_hits_total"),
            "cache_entries": metric_total(metrics, "switchyard_cache_entries"),
            "router_examples": metric_total(metrics, "switchyard_router_feedback_examples_total"),
            "coalesced": metric_total(metrics, "switchyard_coalesced_requests_total"),
            "router_narrowed": metric_total(metrics, "switchyard_router_requests_total", outcome="narrowed"),
            "router_trainings": metric_total(metrics, "switchyard_router_trainings_total"),
            "client_cancellations": metric_total(metrics, "switchyard_client_cancellations_total"),
            "stream_errors": metric_total(metrics, "switchyard_stream_errors_total"),
            "engine_restarts": metric_total(metrics, "switchyard_engine_worker_restarts_total"),
        },
        "traces": None
        if sink is None
        else {
            "sampler_ratio": args.trace_ratio,
            "spans_exported": metric_total(metrics, "switchyard_trace_spans_exported_total"),
            "spans_dropped": {
                reason: metric_total(metrics, "switchyard_trace_spans_dropped_total", reason=reason)
                for reason in ("queue_full", "export_failed", "exporter_down")
            },
            "spans_received": sink["spans"],
            "exports_received": sink["exports"],
        },
        "seed": args.seed,
        "stages": args.stages,
        "responses_ttl_s": args.responses_ttl,
        "vllm": args.vllm_model if (args.vllm_url or args.vllm) else None,
    }
