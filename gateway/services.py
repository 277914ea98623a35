"""Everything a running gateway holds, built at start-up from `Settings` and closed at shutdown.

What a configuration describes (backends, routing, limits, keys, cache, router, prices) is one
`Generation`; a reload (gateway/reload.py) builds the next one with `assemble` and installs it,
and the previous one drains in the background. Redis, the embedder, the spend counters, the
ledger and the admin store live as long as the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batching import WorkerPool
from cache import ResponseCache, SentenceEmbedder, open_store
from gateway import metrics
from gateway.admin.store import AdminStore
from gateway.auth import KeyStore
from gateway.backends.backend import Backend
from gateway.backends.circuit import CircuitBreaker
from gateway.backends.discovery import Discovery, Resolver
from gateway.backends.engine_metrics import EngineScraper, engine_figures
from gateway.backends.health import HealthChecker
from gateway.backends.prefix import PrefixMap
from gateway.backends.registry import BackendRegistry
from gateway.budgets import MemorySpendCounters, RedisSpendCounters, SpendCounters
from gateway.drain import DrainState
from gateway.ledger import Ledger, open_ledger
from gateway.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.openai.responses.conversation import ConversationStage
from gateway.openai.responses.store import MemoryResponseStore, RedisResponseStore, ResponseStore
from gateway.openai.serving import Serving
from gateway.pipeline import Pipeline
from gateway.pricing import PriceTable
from gateway.relay import Relay
from gateway.routes import API_ROUTES
from gateway.settings import BackendSettings, ConfigError, ResilienceSettings, Settings
from gateway.stages.admission import Admit
from gateway.stages.auth import Authenticate
from gateway.stages.budget import SpendGuard
from gateway.stages.cache import CacheStage
from gateway.stages.tools import ToolStage
from gateway.telemetry.telemetry import Telemetry
from gateway.types import Api, Endpoint
from gateway.upstreams.anthropic_http import AnthropicHTTPTransport
from gateway.upstreams.base import UpstreamTransport
from gateway.upstreams.local_engine import LocalEngineTransport
from gateway.upstreams.openai_http import OpenAIHTTPTransport
from gateway.upstreams.translated import TranslatingTransport
from router import ToolRouter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Generation", "Services", "assemble", "build_services", "start_engines"]

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, Any]]


@dataclass(eq=False)
class Generation:
    """What one configuration builds, and a reload replaces as a whole: the backends, their
    discovery, routing and engine scrapes, the relay, limits and keys, the cache, the tool router
    and the prices. Requests keep the generation they started in, so streams in flight finish on
    the backends they began on."""

    settings: Settings
    keys: KeyStore
    registry: BackendRegistry
    relay: Relay
    pipeline: Pipeline
    servings: dict[Endpoint, Serving]  # what the route table's endpoints call (gateway/routes.py)
    health: HealthChecker
    discovery: Discovery
    scraper: EngineScraper
    prefixes: PrefixMap | None = None
    cache: ResponseCache | None = None
    router: ToolRouter | None = None
    spend: SpendGuard | None = None

    def start(self) -> None:
        """Start the generation's background work: health checks, discovery, engine scrapes."""
        self.health.start()
        self.discovery.start()
        self.scraper.start()

    async def stop(self) -> None:
        """Stop the health checks and engine scrapes (what the generation holds is closed by
        `_owned`'s closers, discovery's replicas among them)."""
        await self.health.aclose()
        await self.scraper.aclose()


@dataclass(eq=False)
class Services:
    """Everything a running gateway holds: the current generation (its parts are mirrored in the
    fields below, which is what the edge and the routes read) and what lives as long as the process."""

    settings: Settings
    keys: KeyStore
    registry: BackendRegistry
    relay: Relay
    pipeline: Pipeline
    servings: dict[Endpoint, Serving]
    health: HealthChecker
    drain: DrainState
    responses: ResponseStore = field(default_factory=lambda: MemoryResponseStore(86400.0, 10_000))
    redis: Redis | None = None  # the deployment's one client: limits, keys, cache and router share it
    telemetry: Telemetry | None = None  # spans and the request log; None: both off
    generation: Generation | None = None
    counters: SpendCounters = field(default_factory=MemorySpendCounters)
    ledger: Ledger | None = None
    admin: AdminStore | None = None  # the admin API's store; None: the API is off
    admin_digest: str | None = None
    embedder: SentenceEmbedder | None = None
    embedder_loading: asyncio.Task[None] | None = None
    transport_overrides: Mapping[str, UpstreamTransport] = field(default_factory=dict)
    resolver: Resolver | None = None  # answers for discovered backends instead of DNS (tests)
    # name → () → {"ready": bool, ...}: components that gate readiness (local engines, cache, ...)
    components: dict[str, Readiness] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    background: list[asyncio.Task[None]] = field(default_factory=list)  # start-up work that runs on
    retiring: set[asyncio.Task[None]] = field(default_factory=set)  # earlier generations draining
    started_at: float = field(default_factory=time.time)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        backends = {
            b.name: {
                "healthy": b.healthy,
                "circuit": b.circuit.state.name.lower(),
                "outstanding": b.outstanding,
                "models": sorted(b.models),
                **({"draining": True} if b.draining else {}),
                **({"engine": engine_figures(b.engine)} if b.engine is not None else {}),
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

    def install(self, gen: Generation) -> Generation | None:
        """Make `gen` the one new requests use (one synchronous step: no request sees half of it).
        Returns the generation it replaces."""
        previous = self.generation
        self.generation = gen
        self.settings, self.keys, self.registry = gen.settings, gen.keys, gen.registry
        self.relay, self.pipeline, self.servings, self.health = gen.relay, gen.pipeline, gen.servings, gen.health
        self.components.pop("cache", None)
        cache = gen.cache
        if cache is not None:
            self.components["cache"] = lambda: {"ready": True, **cache.health()}  # bypass is not unready
        if previous is not None:
            kept = {id(b) for b in gen.registry.backends}
            for b in previous.registry.backends:
                if id(b) not in kept:
                    self.components.pop(f"engine:{b.name}", None)
        return previous

    def retire(self, old: Generation) -> None:
        """Let `old` finish its requests in the background, then close what only it used."""
        task = asyncio.create_task(_retire(old, self.generation, self.settings.server.drain_seconds))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def aclose(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.gather(*self.retiring, return_exceptions=True)
        gen = self.generation
        if gen is not None:
            await gen.stop()
            await gen.pipeline.drain_background()
            if gen.spend is not None:
                await gen.spend.drain()
            await _close_all(_owned(gen))
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("error while shutting down")


def _owned(gen: Generation, keep: Generation | None = None) -> list[Callable[[], Awaitable[None]]]:
    """Closers of what `gen` holds and `keep` does not share."""
    kept = {id(b) for b in keep.registry.backends} if keep is not None else set()
    static = {b.name for b in gen.settings.backends if b.discovery is None}  # discovery closes its replicas
    closers: list[Callable[[], Awaitable[None]]] = [gen.discovery.aclose, gen.scraper.aclose]
    closers.extend(b.transport.aclose for b in gen.registry.backends if id(b) not in kept and b.name in static)
    if gen.prefixes is not None:
        closers.append(gen.prefixes.aclose)
    if gen.router is not None and (keep is None or keep.router is not gen.router):
        closers.append(gen.router.aclose)
    if gen.cache is not None and (keep is None or keep.cache is not gen.cache):
        closers.append(gen.cache.aclose)
    return closers


async def _close_all(closers: list[Callable[[], Awaitable[None]]]) -> None:
    for close in closers:
        try:
            await close()
        except Exception:
            log.exception("error while closing")


async def _retire(old: Generation, new: Generation | None, drain_seconds: float) -> None:
    await old.stop()
    if not await old.pipeline.wait_idle(drain_seconds):
        log.warning("reload: %d request(s) of the previous configuration still running after %.0fs; "
                    "closing its removed backends anyway", old.pipeline.active, drain_seconds)  # fmt: skip
    await old.pipeline.drain_background()
    if old.spend is not None:
        await old.spend.drain()
    kept = {id(b) for b in new.registry.backends} if new is not None else set()
    serving = {b.name for b in new.registry.backends} if new is not None else set()
    for b in old.registry.backends:
        if id(b) not in kept:
            log.info("reload: backend %s drained and closed", b.name)
            if b.name not in serving:  # a replica found again by the new generation keeps its gauge
                with contextlib.suppress(KeyError):
                    metrics.BACKEND_UP.remove(b.name)
    await _close_all(_owned(old, new))


def _transport(settings: BackendSettings) -> UpstreamTransport:
    if settings.type == "local":
        assert settings.engine is not None
        return LocalEngineTransport(settings.name, WorkerPool(settings.engine), list(settings.models))
    if settings.type in ("openai", "vllm", "sglang", "anthropic"):  # engines speak OpenAI's API natively
        assert settings.base_url is not None
        http = OpenAIHTTPTransport(
            settings.name,
            settings.base_url,
            api_key=settings.api_key(),
            api_key_header="x-api-key" if settings.type == "anthropic" else "authorization",
            max_connections=settings.max_concurrency,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            keepalive_expiry=settings.keepalive_expiry,
        )
        return AnthropicHTTPTransport(http) if settings.type == "anthropic" else http
    raise NotImplementedError(f"backend type {settings.type!r}")  # pragma: no cover - validated earlier


def _backend(settings: BackendSettings, res: ResilienceSettings, transport: UpstreamTransport) -> Backend:
    circuit = CircuitBreaker(res.circuit_failures, res.circuit_cooldown)
    # Requests on an API the backend does not speak are translated to chat and back.
    # Remote servers are probed for the APIs they may speak (an injected transport is scripted).
    probe = settings.discoverable_apis() if isinstance(transport, OpenAIHTTPTransport) else frozenset()
    discover: dict[Api, Endpoint] = {}
    for route in API_ROUTES:  # an API's first route is its main one (messages, not count_tokens)
        if (api := route.serving.dialect.api) in probe:
            discover.setdefault(api, route.endpoint)
    backend = Backend(settings, TranslatingTransport(transport, settings.native_apis(), discover), circuit)
    backend.models = set(settings.public_models())
    return backend


def _start_engine(services: Services, transport: LocalEngineTransport, after: asyncio.Task[None] | None = None) -> None:
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


def _telemetry(settings: Settings) -> Telemetry:
    """Spans (configured by the OpenTelemetry variables) and the request log; the upstream keys are
    what redaction must never let through."""
    secrets = []
    for backend in settings.backends:
        with contextlib.suppress(ConfigError):  # a missing key variable is reported where it is used
            key = backend.api_key()
            if key:
                secrets.append(key)
    try:
        return Telemetry.from_environment(settings.tracing, settings.request_log, secrets)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _redis_client(settings: Settings) -> Redis | None:
    """One client for every user of Redis. Each user has its own answer to Redis being down
    (limits let requests through, the cache bypasses, the router keeps learning in memory), so the
    client gives up quickly: short timeouts and two quick retries, which ride out a reconnect or a
    slow moment without holding a request for long."""
    if not settings.redis.url:
        return None
    import redis.asyncio as aioredis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout,
        socket_connect_timeout=settings.redis.socket_timeout,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 2),
        health_check_interval=5,
    )


async def build_services(
    settings: Settings,
    drain: DrainState | None = None,
    *,
    transports: Mapping[str, UpstreamTransport] | None = None,
    resolver: Resolver | None = None,
) -> Services:
    """Everything the gateway runs. `transports` replaces the transport of the backends it names
    (in-process tests drive the whole app against scripted upstreams this way); `resolver` answers
    for every discovered backend instead of DNS."""
    telemetry = _telemetry(settings)
    redis = _redis_client(settings)
    embedder = _embedder(settings)
    counters: SpendCounters = (
        RedisSpendCounters(redis, settings.redis.key_prefix) if redis is not None else MemorySpendCounters()
    )
    ledger = open_ledger(settings.spend.ledger, redis, settings.redis.key_prefix)
    stored: ResponseStore = (
        RedisResponseStore(redis, settings.redis.key("response:"), settings.responses.ttl)
        if redis is not None
        else MemoryResponseStore(settings.responses.ttl, settings.responses.max_memory_entries)
    )
    closers: list[Callable[[], Awaitable[None]]] = [telemetry.aclose]  # closers run in reverse: this one last
    if redis is not None:
        closers.append(redis.aclose)
    if ledger is not None:
        ledger.start()
        closers.append(ledger.aclose)  # closed before Redis: its last batch may go there
    if embedder is not None:

        async def close_embedder() -> None:
            embedder.close()

        closers.append(close_embedder)
    admin = AdminStore(redis, settings.redis.key_prefix, counters) if redis is not None else None
    gen = await assemble(
        settings, redis=redis, embedder=embedder, counters=counters, ledger=ledger, responses=stored,
        overrides=transports or {}, resolver=resolver,
    )  # fmt: skip
    services = Services(
        settings=settings,
        keys=gen.keys,
        registry=gen.registry,
        relay=gen.relay,
        pipeline=gen.pipeline,
        servings=gen.servings,
        health=gen.health,
        drain=drain or DrainState(),
        responses=stored,
        redis=redis,
        telemetry=telemetry if telemetry.active else None,
        counters=counters,
        ledger=ledger,
        admin=admin if settings.admin.enabled else None,
        admin_digest=settings.admin.digest(),
        embedder=embedder,
        transport_overrides=transports or {},
        resolver=resolver,
        closers=closers,
    )
    services.install(gen)
    if embedder is not None:
        services.embedder_loading = asyncio.create_task(_then_freeze(embedder.start()), name="embedder-load")
        services.background.append(services.embedder_loading)
        services.components["embedder"] = lambda: {"ready": embedder.loaded}
    start_engines(services, gen.registry.backends)
    gen.start()
    freeze_heap()
    return services


def start_engines(services: Services, backends: list[Backend]) -> None:
    for backend in backends:
        engine = backend.transport.inner if isinstance(backend.transport, TranslatingTransport) else backend.transport
        if isinstance(engine, LocalEngineTransport) and f"engine:{backend.name}" not in services.components:
            _start_engine(services, engine, after=services.embedder_loading)


async def assemble(
    settings: Settings,
    *,
    redis: Redis | None,
    embedder: SentenceEmbedder | None,
    counters: SpendCounters,
    ledger: Ledger | None,
    responses: ResponseStore,
    overrides: Mapping[str, UpstreamTransport],
    resolver: Resolver | None = None,
    previous: Generation | None = None,
) -> Generation:
    """Build the generation `settings` describe. Backends, the cache and the router whose settings
    did not change are taken over from `previous` (their connections, circuits and learning stay);
    discovered replicas are found again by the new generation's own discovery. When building
    fails, what was built so far is closed and the error raised."""
    res = settings.resilience
    old = {b.name: b for b in previous.registry.backends} if previous is not None else {}
    built: list[Callable[[], Awaitable[None]]] = []
    try:
        backends = []
        for b in settings.backends:
            if b.discovery is not None:
                continue  # its replicas join as discovery finds them
            kept = old.get(b.name)
            if kept is not None and kept.settings == b:
                backends.append(kept)
                continue
            transport = overrides.get(b.name) or _transport(b)
            built.append(transport.aclose)
            backends.append(_backend(b, res, transport))
            metrics.BACKEND_UP.labels(b.name).set(1)
        registry = BackendRegistry(
            backends,
            fallbacks=res.fallbacks,
            policy=settings.relay.balancer,
            wait_budget=res.wait_for_backend,
            max_waiters=settings.relay.max_queue,
            load_factor=settings.relay.prefix_load_factor,
        )
        prefixes = None
        if settings.relay.balancer == "prefix":
            prefixes = PrefixMap(
                ttl=settings.relay.prefix_ttl, entries=settings.relay.prefix_entries, redis=redis,
                key_prefix=settings.redis.key("prefix:"),
            )  # fmt: skip
            built.append(prefixes.aclose)
        relay = Relay(registry, settings.relay, res, prefixes=prefixes)
        keys = KeyStore(settings.auth, settings.limits, redis, settings.redis.key_prefix)
        limiter: RateLimiter = (
            RedisRateLimiter(redis, settings.redis.key_prefix) if redis is not None else MemoryRateLimiter()
        )
        cache = None
        if settings.cache.enabled:
            if previous is not None and previous.cache is not None and previous.settings.cache == settings.cache:
                cache = previous.cache
            else:
                store = open_store(settings.cache, redis, prefix=settings.redis.key("cache"))
                cache = ResponseCache(settings.cache, store, embedder)
                await cache.start()
                built.append(cache.aclose)
        router = None
        if settings.router.enabled and embedder is not None:
            if previous is not None and previous.router is not None and previous.settings.router == settings.router:
                router = previous.router
            else:
                state = Path(settings.server.state_dir)
                await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
                router = ToolRouter(
                    settings.router,
                    embedder,
                    redis=redis,
                    state_path=state / "router.json",
                    redis_prefix=settings.redis.key("router:"),
                )
                await router.start()
                built.append(router.aclose)
        spend = None
        if settings.spend.enabled:
            spend = SpendGuard(
                PriceTable(settings.spend), counters, settings.limits,
                ledger=ledger, label_limit=settings.spend.metric_label_limit, fail_open=settings.spend.fail_open,
            )  # fmt: skip
        pipeline = Pipeline(
            relay,
            authenticate=Authenticate(keys),
            conversation=ConversationStage(responses),
            admit=Admit(registry, limiter, relay, settings.limits, spend),
            cache=CacheStage(cache, relay) if cache is not None else None,
            narrow_tools=ToolStage(router, settings.router) if router is not None else None,
            embedder=embedder,
        )
        health = HealthChecker(registry.backends, res.health_interval)  # discovered replicas included
        groups = [b for b in settings.backends if b.discovery is not None]
        discovery = Discovery(groups, registry, health, lambda r: _backend(r, res, _transport(r)), resolver)
        built.append(discovery.aclose)
        scraper = EngineScraper(registry.backends)
        # Learn every backend's models and health before serving with them, without blocking forever.
        try:
            await asyncio.wait_for(asyncio.gather(health.check_all(), discovery.refresh()), timeout=res.health_interval)
        except TimeoutError:
            log.warning("initial health checks did not finish within %.0fs", res.health_interval)
        await scraper.scrape_due()
    except BaseException:
        await _close_all(built)
        raise
    return Generation(
        settings=settings,
        keys=keys,
        registry=registry,
        relay=relay,
        pipeline=pipeline,
        servings={route.endpoint: route.serving(pipeline) for route in API_ROUTES},
        health=health,
        discovery=discovery,
        scraper=scraper,
        prefixes=prefixes,
        cache=cache,
        router=router,
        spend=spend,
    )
