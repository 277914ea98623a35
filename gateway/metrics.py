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
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

__all__ = [
    "BACKEND_UP",
    "BALANCER_DECISIONS",
    "BUDGET_REFUSED",
    "CANCELLATIONS",
    "CIRCUIT_STATE",
    "COALESCED",
    "CONFIG_LOADED",
    "CONFIG_RELOADS",
    "E2E",
    "FALLBACKS",
    "HEDGES",
    "IN_FLIGHT",
    "ITL",
    "LEDGER_BUFFERED",
    "LEDGER_ROWS",
    "OVERHEAD",
    "RATE_LIMITED",
    "REPLICA_KV_USAGE",
    "REPLICA_PREFIX_HITS",
    "REPLICA_PREFIX_QUERIES",
    "REPLICA_REQUESTS",
    "REQUESTS",
    "REQUEST_DURATION",
    "REQUEST_LOG_DROPPED",
    "RETRIES",
    "SHED",
    "SPANS_DROPPED",
    "SPANS_EXPORTED",
    "SPEND",
    "STORE_ERRORS",
    "STREAM_ERRORS",
    "TOKENS",
    "TPOT",
    "TTFT",
    "UPSTREAM_REQUESTS",
    "WASTED_TOKENS",
    "exemplar",
    "labelled",
    "render",
]

# About 1 ms to 60 s: LLM latencies span five orders of magnitude.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS = Counter(
    "switchyard_requests_total",
    "Requests answered, by model, backend and HTTP status",
    ["endpoint", "model", "backend", "status"],
)
IN_FLIGHT = Gauge("switchyard_requests_in_flight", "Requests being served", ["endpoint"], multiprocess_mode="livesum")
REQUEST_DURATION = Histogram(
    "switchyard_request_duration_seconds",
    "Whole request time as the gateway saw it",
    ["endpoint", "model"],
    buckets=LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "switchyard_gateway_overhead_seconds",
    "Request time spent in the gateway (total minus upstream)",
    ["endpoint"],
    buckets=FINE_BUCKETS,
)
UPSTREAM_REQUESTS = Counter(
    "switchyard_upstream_requests_total",
    "Calls made to backends, by outcome",
    ["backend", "outcome"],
)
TTFT = Histogram(
    "switchyard_time_to_first_token_seconds",
    "Upstream send to first content token",
    ["model", "backend"],
    buckets=LATENCY_BUCKETS,
)
ITL = Histogram(
    "switchyard_inter_token_latency_seconds",
    "Gap between consecutive content chunks",
    ["model", "backend"],
    buckets=LATENCY_BUCKETS,
)
TPOT = Histogram(
    "switchyard_time_per_output_token_seconds",
    "(end - first token) / (output tokens - 1)",
    ["model", "backend"],
    buckets=LATENCY_BUCKETS,
)
E2E = Histogram(
    "switchyard_upstream_duration_seconds",
    "Upstream send to the last byte",
    ["model", "backend"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("switchyard_tokens_total", "Tokens by kind (prompt, completion)", ["model", "backend", "kind"])
RETRIES = Counter("switchyard_retries_total", "Upstream attempts repeated, by reason", ["backend", "reason"])
FALLBACKS = Counter("switchyard_fallbacks_total", "Requests served by a fallback model", ["model", "fallback"])
CIRCUIT_STATE = Gauge(
    "switchyard_circuit_state",
    "Circuit breaker: 0 closed, 1 half-open, 2 open",
    ["backend"],
    multiprocess_mode="max",
)
BACKEND_UP = Gauge(
    "switchyard_backend_up",
    "Last active health check passed (1) or failed (0)",
    ["backend"],
    multiprocess_mode="min",
)
HEDGES = Counter("switchyard_hedges_total", "Hedged requests by outcome", ["model", "outcome"])
WASTED_TOKENS = Counter("switchyard_hedge_wasted_tokens_total", "Content chunks received from hedge losers", ["model"])
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
SHED = Counter("switchyard_shed_total", "Requests refused to protect latency or memory", ["priority", "reason"])

# What engine replicas (vLLM, SGLang) report about themselves, scraped from their /metrics.
REPLICA_REQUESTS = Gauge(
    "switchyard_replica_requests", "Requests an engine replica holds, by state (running, waiting)",
    ["backend", "state"], multiprocess_mode="max",
)
REPLICA_KV_USAGE = Gauge(
    "switchyard_replica_kv_cache_usage_ratio", "Fraction of an engine replica's KV cache in use", ["backend"],
    multiprocess_mode="max",
)
REPLICA_PREFIX_HITS = Counter(
    "switchyard_replica_prefix_cache_hits_tokens", "Prompt tokens an engine replica found in its prefix cache",
    ["backend"],
)
REPLICA_PREFIX_QUERIES = Counter(
    "switchyard_replica_prefix_cache_queries_tokens", "Prompt tokens an engine replica looked up in its prefix cache",
    ["backend"],
)
BALANCER_DECISIONS = Counter(
    "switchyard_balancer_decisions_total",
    "Prefix balancer choices: affinity (the replica holding the prefix), spill (it was too loaded), "
    "cold (no replica holds it)",
    ["model", "decision"],
)
SPANS_EXPORTED = Counter("switchyard_trace_spans_exported_total", "Spans the collector accepted")
SPANS_DROPPED = Counter(
    "switchyard_trace_spans_dropped_total",
    "Spans not exported: queue_full (the export queue was full), export_failed (the collector refused or "
    "was unreachable), exporter_down (the export process stopped)",
    ["reason"],
)
REQUEST_LOG_DROPPED = Counter("switchyard_request_log_dropped_total", "Request-log lines dropped (queue full)")


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: label values are few and fixed, and the lookup that
    `labels` does on every call shows up on the hot path."""
    key = (id(metric), values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition and its content type: OpenMetrics, which carries the latency histograms'
    exemplars (trace ids), when the scraper's Accept header asks for it, else Prometheus text."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def exemplar(trace: Any) -> dict[str, str] | None:
    """The exemplar for an observation made for a sampled request's trace (None otherwise)."""
    if trace is None or not trace.sampled:
        return None
    return {"trace_id": trace.trace_id_hex}


SPEND = Counter(
    "switchyard_spend_usd_total",
    "Money spent, in USD, by tenant and team (past spend.metric_label_limit: other)",
    ["tenant", "team"],
)
BUDGET_REFUSED = Counter(
    "switchyard_budget_refused_total", "Requests refused because they would pass a budget", ["level", "period"]
)
LEDGER_ROWS = Counter("switchyard_ledger_rows_total", "Spend ledger rows by outcome", ["sink", "outcome"])
LEDGER_BUFFERED = Gauge(
    "switchyard_ledger_buffered_rows", "Ledger rows waiting to be written", multiprocess_mode="livesum"
)
CONFIG_RELOADS = Counter(
    "switchyard_config_reloads_total", "Configuration reloads by outcome (applied, invalid, failed)", ["outcome"]
)
CONFIG_LOADED = Gauge(
    "switchyard_config_last_reload_ok",
    "1 when the last reload was applied, 0 when it was refused",
    multiprocess_mode="min",
)
