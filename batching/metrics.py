"""The local engine's Prometheus metrics (default registry, prefix `switchyard_engine_`).

Labels are the model name (from configuration) and the worker index (one per device), both bounded.
The pool updates them in the gateway process from what its workers report each iteration.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from batching.messages import IterationStats

__all__ = [
    "FINISHED",
    "GENERATION_TOKENS",
    "ITERATION_SEQUENCES",
    "ITERATION_TOKENS",
    "ITL",
    "KV_CACHE_USAGE",
    "MODEL_LOAD_SECONDS",
    "PREEMPTIONS",
    "PREFIX_CACHE_HITS",
    "PREFIX_CACHE_QUERIES",
    "PROMPT_TOKENS",
    "QUEUE_TIME",
    "REJECTED",
    "REQUESTS_RUNNING",
    "REQUESTS_WAITING",
    "TTFT",
    "WORKER_RESTARTS",
    "record_step",
]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_LABELS = ["model", "worker"]

REQUESTS_RUNNING = Gauge(
    "switchyard_engine_requests_running", "Sequences in the running batch", _LABELS,
    multiprocess_mode="livesum",
)
REQUESTS_WAITING = Gauge(
    "switchyard_engine_requests_waiting", "Sequences waiting for a slot or KV memory", _LABELS,
    multiprocess_mode="livesum",
)
KV_CACHE_USAGE = Gauge(
    "switchyard_engine_kv_cache_usage_ratio", "Fraction of KV cache blocks in use", _LABELS,
    multiprocess_mode="max",
)
MODEL_LOAD_SECONDS = Gauge(
    "switchyard_engine_model_load_seconds", "Seconds the worker took to load the model and size its cache",
    _LABELS, multiprocess_mode="max",
)
ITERATION_TOKENS = Histogram(
    "switchyard_engine_iteration_tokens", "Tokens computed per engine iteration (prefill and decode)",
    _LABELS, buckets=_COUNTS,
)
ITERATION_SEQUENCES = Histogram(
    "switchyard_engine_iteration_sequences", "Sequences in each engine iteration", _LABELS, buckets=_COUNTS,
)
TTFT = Histogram(
    "switchyard_engine_time_to_first_token_seconds", "From submission to the first generated token",
    ["model"], buckets=_LATENCY,
)
ITL = Histogram(
    "switchyard_engine_inter_token_latency_seconds", "Between consecutive generated tokens of a request",
    ["model"], buckets=_LATENCY,
)
QUEUE_TIME = Histogram(
    "switchyard_engine_queue_time_seconds", "From arrival at a worker to its first scheduled iteration",
    _LABELS, buckets=_LATENCY,
)
PREEMPTIONS = Counter(
    "switchyard_engine_preemptions_total", "Sequences preempted (KV freed, recomputed later)", _LABELS,
)
PROMPT_TOKENS = Counter("switchyard_engine_prompt_tokens_total", "Prompt tokens admitted", ["model"])
GENERATION_TOKENS = Counter("switchyard_engine_generation_tokens_total", "Tokens generated", ["model"])
FINISHED = Counter(
    "switchyard_engine_requests_finished_total", "Requests that ended, by reason", ["model", "reason"],
)  # reason: stop, length, cancelled, error
REJECTED = Counter(
    "switchyard_engine_requests_rejected_total", "Requests refused before running, by reason",
    ["model", "reason"],
)  # reason: overloaded, invalid
WORKER_RESTARTS = Counter(
    "switchyard_engine_worker_restarts_total", "Worker processes restarted after they died", _LABELS,
)
PREFIX_CACHE_QUERIES = Gauge(
    "switchyard_engine_prefix_cache_queries_tokens", "Prompt tokens looked up in the prefix cache since start",
    _LABELS, multiprocess_mode="livesum",
)
PREFIX_CACHE_HITS = Gauge(
    "switchyard_engine_prefix_cache_hits_tokens", "Prompt tokens found in the prefix cache since start",
    _LABELS, multiprocess_mode="livesum",
)


def record_step(model: str, worker: int, stats: IterationStats, new_tokens: int, kv_used_fraction: float) -> None:
    """One worker iteration, as the pool received it."""
    label = str(worker)
    GENERATION_TOKENS.labels(model).inc(new_tokens)
    REQUESTS_RUNNING.labels(model, label).set(stats.num_running)
    REQUESTS_WAITING.labels(model, label).set(stats.num_waiting)
    KV_CACHE_USAGE.labels(model, label).set(kv_used_fraction)
    PREFIX_CACHE_QUERIES.labels(model, label).set(stats.prefix_cache_queries)
    PREFIX_CACHE_HITS.labels(model, label).set(stats.prefix_cache_hits)
    if stats.num_batched_seqs:
        ITERATION_TOKENS.labels(model, label).observe(stats.num_batched_tokens)
        ITERATION_SEQUENCES.labels(model, label).observe(stats.num_batched_seqs)
    if stats.num_preemptions:
        PREEMPTIONS.labels(model, label).inc(stats.num_preemptions)
    for seconds in stats.queue_seconds.values():
        QUEUE_TIME.labels(model, label).observe(seconds)
