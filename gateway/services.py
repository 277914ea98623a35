"""Everything a running gateway holds, built once at start-up from `Settings` and closed at shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batching import WorkerPool
from cache import ResponseCache, SentenceEmbedder, open_store
from gateway import metrics
from gateway.auth import KeyStore
from gateway.backends.backend import Backend
from gateway.backends.circuit import CircuitBreaker
from gateway.backends.health import HealthChecker
from gateway.backends.registry import BackendRegistry
from gateway.drain import DrainState
from gateway.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.openai.chat.serving import ChatServing
from gateway.openai.completions.serving import CompletionServing
from gateway.openai.embeddings.serving import EmbeddingServing
from gateway.pipeline import Pipeline, Stage
from gateway.relay import Relay
from gateway.settings import BackendSettings, Settings
from gateway.stages.admission import Admit
from gateway.stages.auth import Authenticate
from gateway.stages.cache import CacheStage
from gateway.stages.tools import ToolStage
from gateway.upstreams.base import UpstreamTransport
from gateway.upstreams.local_engine import LocalEngineTransport
from gateway.upstreams.openai_http import OpenAIHTTPTransport
from router import ToolRouter

__all__ = ["Services", "build_services"]

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, Any]]


@dataclass(eq=False)
class Services:
    settings: Settings
    keys: KeyStore
    registry: BackendRegistry
    relay: Relay
    pipeline: Pipeline
    chat: ChatServing
    completions: CompletionServing
    embeddings: EmbeddingServing
    health: HealthChecker
    drain: DrainState
    redis: Any = None
    # name → () → {"ready": bool, ...}: components that gate readiness (local engines, cache, ...)
    components: dict[str, Readiness] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)  # start-up work that runs on
    started_at: float = field(default_factory=time.time)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        backends = {
            b.name: {
                "healthy": b.healthy,
                "circuit": b.circuit.state.name.lower(),
                "outstanding": b.outstanding,
                "models": sorted(b.models),
            }
            for b in self.registry.backends
        }
        components = {name: probe() for name, probe in self.components.items()}
        ready = (
            not self.drain.draining
            and self.registry.all_known
            and bool(self.registry.models())
            and all(c.get("ready", True) for c in components.values())
        )
        return ready, {"draining": self.drain.draining, "backends": backends, **components}

    async def aclose(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.health.aclose()
        await self.pipeline.drain_background()
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("error while shutting down")


def _transport(settings: BackendSettings) -> UpstreamTransport:
    if settings.type == "local":
        assert settings.engine is not None
        return LocalEngineTransport(settings.name, WorkerPool(settings.engine), list(settings.models))
    if settings.type == "openai":
        assert settings.base_url is not None
        return OpenAIHTTPTransport(
            settings.name,
            settings.base_url,
            api_key=settings.api_key(),
            max_connections=settings.max_concurrency,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
    raise NotImplementedError(f"backend type {settings.type!r}")  # pragma: no cover - validated earlier


def _start_engine(
    services: Services, transport: LocalEngineTransport, after: asyncio.Task[None] | None = None
) -> None:
    """Load the model in the background; readiness stays false until every worker is warm."""
    pool = transport.pool

    async def load() -> None:
        if after is not None:
            # transformers' lazy imports are not thread-safe: the embedder loading in one thread
            # while the engine's tokenizer loads in another can fail with "cannot import name
            # 'AutoTokenizer' from 'transformers'", and the engine would never start. One at a time.
            await asyncio.gather(after, return_exceptions=True)
        try:
            await _then_freeze(pool.start())
            log.info("local engine %s ready in %.1fs", transport.name, pool.load_seconds)
        except Exception:
            log.exception("local engine %s failed to start", transport.name)

    services.background.append(asyncio.create_task(load(), name=f"engine-{transport.name}"))
    services.components[f"engine:{transport.name}"] = pool.stats  # includes "ready"


def freeze_heap() -> None:
    """Move everything alive now (frameworks, models, tokenizers) out of the garbage collector's
    reach: a full collection would otherwise walk millions of start-up objects and stall requests
    for tens of milliseconds. Called once start-up work is done."""
    gc.collect()
    gc.freeze()


async def _then_freeze(loading: Awaitable[None]) -> None:
    await loading
    freeze_heap()


def _embedder(settings: Settings) -> SentenceEmbedder | None:
    if not settings.needs_embedder():
        return None
    e = settings.embedder
    return SentenceEmbedder(e.model_path, max_batch=e.max_batch, device=e.device)


def _redis_client(settings: Settings) -> Any:
    if not settings.redis.url:
        return None
    import redis.asyncio as aioredis

    return aioredis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout,
        socket_connect_timeout=settings.redis.socket_timeout,
        health_check_interval=5,
    )


async def build_services(settings: Settings, drain: DrainState | None = None) -> Services:
    redis = _redis_client(settings)
    res = settings.resilience
    backends = []
    for b in settings.backends:
        backend = Backend(b, _transport(b), CircuitBreaker(res.circuit_failures, res.circuit_cooldown))
        backend.models = set(b.public_models())
        backends.append(backend)
        metrics.BACKEND_UP.labels(b.name).set(1)
    registry = BackendRegistry(
        backends,
        fallbacks=res.fallbacks,
        policy="ttft" if settings.relay.balancer == "ttft" else "least_outstanding",
        wait_budget=res.wait_for_backend,
        max_waiters=settings.relay.max_queue,
    )
    relay = Relay(registry, settings.relay, res)
    keys = KeyStore(settings.auth, settings.limits, redis, settings.redis.key_prefix)
    limiter: RateLimiter = (
        RedisRateLimiter(redis, settings.redis.key_prefix) if redis is not None else MemoryRateLimiter()
    )
    stages: list[Stage] = [Authenticate(keys), Admit(registry, limiter, relay, settings.limits)]
    embedder = _embedder(settings)
    cache = None
    if settings.cache.enabled:
        cache = ResponseCache(settings.cache, open_store(settings.cache), embedder)
        await cache.start()
        stages.append(CacheStage(cache, relay))
    router = None
    if settings.router.enabled and embedder is not None:
        state = Path(settings.server.state_dir)
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
        router = ToolRouter(settings.router, embedder, redis=redis, state_path=state / "router.json")
        await router.start()
        stages.append(ToolStage(router, settings.router))
    pipeline = Pipeline(stages, relay, embedder=embedder)
    health = HealthChecker(backends, res.health_interval)
    services = Services(
        settings=settings,
        keys=keys,
        registry=registry,
        relay=relay,
        pipeline=pipeline,
        chat=ChatServing(pipeline),
        completions=CompletionServing(pipeline),
        embeddings=EmbeddingServing(pipeline),
        health=health,
        drain=drain or DrainState(),
        redis=redis,
    )
    services.closers.extend(b.transport.aclose for b in backends)
    if redis is not None:
        services.closers.append(redis.aclose)
    embedder_loading = None
    if embedder is not None:
        embedder_loading = asyncio.create_task(_then_freeze(embedder.start()), name="embedder-load")
        services.background.append(embedder_loading)
    for backend in backends:
        if isinstance(backend.transport, LocalEngineTransport):
            _start_engine(services, backend.transport, after=embedder_loading)
    if router is not None:
        services.closers.append(router.aclose)
    if cache is not None:
        services.closers.append(cache.aclose)
        services.components["cache"] = lambda: {"ready": True, **cache.health()}  # bypass is not unready
    if embedder is not None:
        services.components["embedder"] = lambda: {"ready": embedder.loaded}

        async def close_embedder() -> None:
            embedder.close()

        services.closers.append(close_embedder)
    # Learn every backend's models and health before declaring readiness, without blocking forever.
    try:
        await asyncio.wait_for(health.check_all(), timeout=res.health_interval)
    except TimeoutError:
        log.warning("initial health checks did not finish within %.0fs", res.health_interval)
    health.start()
    freeze_heap()
    return services
