"""The gateway's Prometheus metrics. Names start with `switchyard_`, times are in seconds, and every
label takes values from configuration (model and backend names) or a short fixed list, never from
a prompt, a key or a user.

With several gateway processes (`server.workers > 1`) the CLI sets PROMETHEUS_MULTIPROC_DIR before
any worker starts and `/metrics` aggregates all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "BACKEND_UP",
    "CANCELLATIONS",
    "CIRCUIT_STATE",
    "COALESCED",
    "CONTENT_TYPE_LATEST",
    "E2E",
    "FALLBACKS",
    "HEDGES",
    "IN_FLIGHT",
    "ITL",
    "OVERHEAD",
    "RATE_LIMITED",
    "REQUESTS",
    "REQUEST_DURATION",
    "RETRIES",
    "SHED",
    "STORE_ERRORS",
    "STREAM_ERRORS",
    "TOKENS",
    "TPOT",
    "TTFT",
    "UPSTREAM_REQUESTS",
    "WASTED_TOKENS",
    "labelled",
    "render",
]

# About 1 ms to 60 s: LLM latencies span five orders of magnitude.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)
FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS = Counter(
    "switchyard_requests_total", "Requests answered, by model, backend and HTTP status",
    ["endpoint", "model", "backend", "status"],
)
IN_FLIGHT = Gauge(
    "switchyard_requests_in_flight", "Requests being served", ["endpoint"], multiprocess_mode="livesum"
)
REQUEST_DURATION = Histogram(
    "switchyard_request_duration_seconds", "Whole request time as the gateway saw it",
    ["endpoint", "model"], buckets=LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "switchyard_gateway_overhead_seconds", "Request time spent in the gateway (total minus upstream)",
    ["endpoint"], buckets=FINE_BUCKETS,
)
UPSTREAM_REQUESTS = Counter(
    "switchyard_upstream_requests_total", "Calls made to backends, by outcome",
    ["backend", "outcome"],
)
TTFT = Histogram(
    "switchyard_time_to_first_token_seconds", "Upstream send to first content token",
    ["model", "backend"], buckets=LATENCY_BUCKETS,
)
ITL = Histogram(
    "switchyard_inter_token_latency_seconds", "Gap between consecutive content chunks",
    ["model", "backend"], buckets=LATENCY_BUCKETS,
)
TPOT = Histogram(
    "switchyard_time_per_output_token_seconds", "(end - first token) / (output tokens - 1)",
    ["model", "backend"], buckets=LATENCY_BUCKETS,
)
E2E = Histogram(
    "switchyard_upstream_duration_seconds", "Upstream send to the last byte", ["model", "backend"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("switchyard_tokens_total", "Tokens by kind (prompt, completion)", ["model", "backend", "kind"])
RETRIES = Counter("switchyard_retries_total", "Upstream attempts repeated, by reason", ["backend", "reason"])
FALLBACKS = Counter("switchyard_fallbacks_total", "Requests served by a fallback model", ["model", "fallback"])
CIRCUIT_STATE = Gauge(
    "switchyard_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["backend"],
    multiprocess_mode="max",
)
BACKEND_UP = Gauge(
    "switchyard_backend_up", "Last active health check passed (1) or failed (0)", ["backend"],
    multiprocess_mode="min",
)
HEDGES = Counter("switchyard_hedges_total", "Hedged requests by outcome", ["model", "outcome"])
WASTED_TOKENS = Counter(
    "switchyard_hedge_wasted_tokens_total", "Content chunks received from hedge losers", ["model"]
)
CANCELLATIONS = Counter(
    "switchyard_client_cancellations_total", "Requests the client abandoned before the end", ["endpoint"]
)
STREAM_ERRORS = Counter(
    "switchyard_stream_errors_total", "Streams ended with an error event after the first byte", ["reason"]
)
RATE_LIMITED = Counter("switchyard_rate_limited_total", "Requests refused by tenant limits", ["limit"])
STORE_ERRORS = Counter("switchyard_store_errors_total", "Failed calls to a shared store", ["store"])
COALESCED = Counter(
    "switchyard_coalesced_requests_total", "Requests answered by an identical request already in flight", ["endpoint"]
)
SHED = Counter(
    "switchyard_shed_total", "Requests refused to protect latency or memory", ["priority", "reason"]
)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: label values are few and fixed, and the lookup that
    `labels` does on every call shows up on the hot path."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
