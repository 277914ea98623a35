"""The cache's Prometheus metrics (default registry, `switchyard_cache_` prefix, bounded labels:
layer, reason, operation; never a prompt, key or tenant)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from scipy.stats import binomtest

__all__ = [
    "BYPASSES",
    "EMBEDDING_SECONDS",
    "ENTRIES",
    "EVICTIONS",
    "FALSE_HIT_RATE",
    "FALSE_HIT_RATE_HIGH",
    "FALSE_HIT_RATE_LOW",
    "FALSE_HIT_SAMPLES",
    "HITS",
    "LOOKUPS",
    "LOOKUP_SECONDS",
    "MISSES",
    "SIMILARITY",
    "STORES",
    "STORE_ERRORS",
    "STORE_UP",
    "VERIFICATIONS",
    "export_false_hits",
]

_FAST = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)

LOOKUPS = Counter("switchyard_cache_lookups_total", "Cache lookups by outcome.", ["status"])
HITS = Counter("switchyard_cache_hits_total", "Cache hits by layer.", ["layer"])
MISSES = Counter("switchyard_cache_misses_total", "Cache misses by reason.", ["reason"])
BYPASSES = Counter("switchyard_cache_bypasses_total", "Lookups that skipped the cache, by reason.", ["reason"])
LOOKUP_SECONDS = Histogram("switchyard_cache_lookup_seconds", "Lookup latency by outcome (embedding included).",
                           ["status"], buckets=_FAST)
EMBEDDING_SECONDS = Histogram("switchyard_cache_embedding_seconds",
                              "Time waiting for the latest user turn's embedding.", buckets=_FAST)
SIMILARITY = Histogram("switchyard_cache_similarity", "Cosine similarity of the best semantic candidate.",
                       buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0))
# The store is shared between replicas with Redis, so every process reports the same number: max.
ENTRIES = Gauge("switchyard_cache_entries", "Entries in the store.", multiprocess_mode="livemax")
STORE_UP = Gauge("switchyard_cache_store_up", "1 when the store answers, 0 while it is bypassed.",
                 multiprocess_mode="livemin")
EVICTIONS = Counter("switchyard_cache_evictions_total", "Entries removed before use, by reason.", ["reason"])
STORE_ERRORS = Counter("switchyard_cache_store_errors_total", "Store operations that failed.", ["operation"])
STORES = Counter("switchyard_cache_stores_total", "Responses offered for storage, by outcome.", ["outcome"])
VERIFICATIONS = Counter("switchyard_cache_verifications_total",
                        "Hits re-asked of the backend, by layer and verdict.", ["layer", "verdict"])
FALSE_HIT_RATE = Gauge("switchyard_cache_false_hit_rate",
                       "Share of verified semantic hits the backend contradicted (recent window).",
                       multiprocess_mode="livemax")
FALSE_HIT_RATE_LOW = Gauge("switchyard_cache_false_hit_rate_low",
                           "Lower end of the 95% Wilson interval of the live false-hit rate.",
                           multiprocess_mode="livemax")
FALSE_HIT_RATE_HIGH = Gauge("switchyard_cache_false_hit_rate_high",
                            "Upper end of the 95% Wilson interval of the live false-hit rate.",
                            multiprocess_mode="livemax")
FALSE_HIT_SAMPLES = Gauge("switchyard_cache_false_hit_samples",
                          "Verified semantic hits behind the live false-hit rate (recent window).",
                          multiprocess_mode="livemin")


def export_false_hits(window: tuple[int, int]) -> None:
    """Set the live false-hit rate, its 95% Wilson interval and its sample count."""
    wrong, verified = window
    FALSE_HIT_SAMPLES.set(verified)
    if not verified:
        return
    interval = binomtest(wrong, verified).proportion_ci(0.95, method="wilson")
    FALSE_HIT_RATE.set(wrong / verified)
    FALSE_HIT_RATE_LOW.set(float(interval.low))
    FALSE_HIT_RATE_HIGH.set(float(interval.high))
