"""The router's Prometheus metrics (default registry, `switchyard_router_` prefix, seconds, labels
from short fixed lists only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from scipy.stats import binomtest

__all__ = [
    "BANDS",
    "BLENDS",
    "CLASSIFIER_SECONDS",
    "FALLBACKS",
    "FEEDBACK_EXAMPLES",
    "LIVE_RECALL",
    "LIVE_RECALL_HIGH",
    "LIVE_RECALL_LOW",
    "LIVE_RECALL_SAMPLES",
    "REQUESTS",
    "SHADOW",
    "TOOLS_IN",
    "TOOLS_OUT",
    "TRAININGS",
    "export_live_recall",
]

_TOOL_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 50, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "switchyard_router_requests_total", "Requests seen by the tool router, by outcome", ["outcome"]
)  # passthrough | narrowed | fallback | shadow
TOOLS_IN = Histogram("switchyard_router_tools_in", "Tools in a request that carries tools", buckets=_TOOL_BUCKETS)
TOOLS_OUT = Histogram(
    "switchyard_router_tools_out", "Tools sent upstream (after narrowing, when it narrowed)", buckets=_TOOL_BUCKETS
)
BANDS = Counter("switchyard_router_confidence_total", "Scored requests by confidence band", ["band"])
CLASSIFIER_SECONDS = Histogram(
    "switchyard_router_classifier_seconds",
    "Time to score and narrow one request (embedding included when the router embeds the intent itself)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
FALLBACKS = Counter(
    "switchyard_router_fallbacks_total", "Requests that passed with the full tool list", ["reason"]
)  # low_confidence | no_intent | embedding | warming
FEEDBACK_EXAMPLES = Counter(
    "switchyard_router_feedback_examples_total", "Observed tool calls recorded as feedback examples"
)
TRAININGS = Counter("switchyard_router_trainings_total", "Feedback classifiers trained")
SHADOW = Counter(
    "switchyard_router_shadow_total", "Shadow-measured tool calls: was the called tool in the kept set?", ["result"]
)  # kept | missed
LIVE_RECALL = Gauge(
    "switchyard_router_live_recall",
    "Share of shadow-measured tool calls whose tool the router kept (last 1000 per process)",
    multiprocess_mode="liveall",
)
LIVE_RECALL_LOW = Gauge(
    "switchyard_router_live_recall_low",
    "Lower end of the 95% Wilson interval of the live router recall",
    multiprocess_mode="liveall",
)
LIVE_RECALL_HIGH = Gauge(
    "switchyard_router_live_recall_high",
    "Upper end of the 95% Wilson interval of the live router recall",
    multiprocess_mode="liveall",
)
LIVE_RECALL_SAMPLES = Gauge(
    "switchyard_router_live_recall_samples",
    "Shadow-measured tool calls behind the live router recall (last 1000 per process)",
    multiprocess_mode="liveall",
)
BLENDS = Counter(
    "switchyard_router_blend_decisions_total",
    "Feedback models judged on held-back calls: blended in, or zero-shot kept",
    ["decision"],
)  # blended | zero_shot


def export_live_recall(kept: int, measured: int) -> None:
    """Set the live recall, its 95% Wilson interval and its sample count."""
    LIVE_RECALL_SAMPLES.set(measured)
    if not measured:
        return
    interval = binomtest(kept, measured).proportion_ci(0.95, method="wilson")
    LIVE_RECALL.set(kept / measured)
    LIVE_RECALL_LOW.set(float(interval.low))
    LIVE_RECALL_HIGH.set(float(interval.high))
