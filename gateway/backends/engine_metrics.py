"""What an engine (vLLM, SGLang) says about its own load, scraped from its Prometheus /metrics.

Scrapes run on an interval in the background, never on a request's path; backend choice reads the
latest figures (`Backend.engine`). Figures older than a few scrape intervals are ignored, so an
engine that stopped answering its /metrics is judged by the gateway's own observations again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.backends.backend import Backend
from gateway.upstreams import http1

__all__ = ["ENGINE_TYPES", "EngineScraper", "EngineStats", "engine_figures", "fresh", "parse_engine_metrics"]

log = logging.getLogger(__name__)

ENGINE_TYPES = ("vllm", "sglang")
_STALE_AFTER_INTERVALS = 3

# Sample names (as the parser reports them: counters without `_total`) → field. vLLM 0.32 names
# KV usage `kv_cache_usage_perc` (a fraction, despite the name); older releases `gpu_cache_usage_perc`.
# Prefix-cache hits and queries are counted in tokens.
_VLLM = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",
    "vllm:prefix_cache_hits": "prefix_hits",
    "vllm:prefix_cache_queries": "prefix_queries",
}
_SGLANG = {
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "waiting",
    "sglang:token_usage": "kv_usage",
}
_NAMES = {"vllm": _VLLM, "sglang": _SGLANG}


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0  # fraction of KV-cache blocks in use, 0..1
    prefix_hits: float = 0.0  # cumulative, tokens
    prefix_queries: float = 0.0
    scraped_at: float = 0.0

    @property
    def load(self) -> float:
        """Requests the engine holds (all gateways' together)."""
        return self.running + self.waiting


def parse_engine_metrics(kind: str, text: str, scraped_at: float) -> EngineStats:
    """An engine's /metrics page → its load figures, summed over its label sets (one model each)."""
    wanted = _NAMES[kind]
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            field_name = wanted.get(name)
            if field_name is not None:
                found[field_name] = found.get(field_name, 0.0) + float(sample.value)
    return EngineStats(**found, scraped_at=scraped_at)


class EngineScraper:
    """Scrapes every engine backend the registry holds (replicas come and go with discovery)."""

    def __init__(self, backends: list[Backend], clock: Callable[[], float] = time.monotonic):
        self._backends = backends  # the registry's list, shared: discovered replicas appear in it
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._next: dict[int, float] = {}

    def _engines(self) -> Iterable[Backend]:
        return (b for b in self._backends if b.settings.type in ENGINE_TYPES)

    async def scrape(self, backend: Backend) -> None:
        root = (backend.settings.base_url or "").removesuffix("/v1")
        try:
            status, body = await http1.get(root + "/metrics", timeout=2.0)
            if status != 200:
                raise ValueError(f"/metrics answered {status}")
            stats = parse_engine_metrics(backend.settings.type, body.decode(errors="replace"), self._clock())
        except (http1.HttpError, OSError, ValueError) as exc:
            log.debug("scraping %s failed: %s", backend.name, exc)
            return  # keep the last figures; they go stale on their own
        publish(backend.name, backend.engine, stats)
        backend.engine = stats

    async def scrape_due(self) -> None:
        now = self._clock()
        engines = list(self._engines())
        self._next = {id(b): self._next.get(id(b), 0.0) for b in engines}  # replicas that left are forgotten
        due = [b for b in engines if self._next[id(b)] <= now]
        for b in due:
            self._next[id(b)] = now + b.settings.metrics_interval
        await asyncio.gather(*(self.scrape(b) for b in due))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="engine-metrics")

    async def _loop(self) -> None:
        while True:
            try:
                await self.scrape_due()
            except Exception:
                log.exception("engine metrics scrape failed")
            await asyncio.sleep(0.5)  # the scrape period's resolution, not a synchronisation

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def engine_figures(stats: EngineStats) -> dict[str, float]:
    """What /readyz shows of an engine."""
    return {"running": stats.running, "waiting": stats.waiting, "kv_usage": stats.kv_usage}


def fresh(backend: Backend, now: float) -> EngineStats | None:
    """The backend's engine figures when recent enough to trust."""
    stats = backend.engine
    if stats is None or now - stats.scraped_at > _STALE_AFTER_INTERVALS * backend.settings.metrics_interval:
        return None
    return stats


def publish(name: str, before: EngineStats | None, stats: EngineStats) -> None:
    metrics.REPLICA_REQUESTS.labels(name, "running").set(stats.running)
    metrics.REPLICA_REQUESTS.labels(name, "waiting").set(stats.waiting)
    metrics.REPLICA_KV_USAGE.labels(name).set(stats.kv_usage)
    # The engine's counters, re-counted as ours: what grew since the last scrape (all of it after
    # an engine restart reset them), so rate() over them works across gateway and engine restarts.
    for metric, now, then in (
        (metrics.REPLICA_PREFIX_HITS, stats.prefix_hits, before.prefix_hits if before else 0.0),
        (metrics.REPLICA_PREFIX_QUERIES, stats.prefix_queries, before.prefix_queries if before else 0.0),
    ):
        metric.labels(name).inc(now - then if now >= then else now)


def forget(name: str) -> None:
    """A replica left: drop its series so the label set stays bounded."""
    for metric, labels in (
        (metrics.REPLICA_REQUESTS, (name, "running")),
        (metrics.REPLICA_REQUESTS, (name, "waiting")),
        (metrics.REPLICA_KV_USAGE, (name,)),
        (metrics.REPLICA_PREFIX_HITS, (name,)),
        (metrics.REPLICA_PREFIX_QUERIES, (name,)),
    ):
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
