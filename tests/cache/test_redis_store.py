"""RedisStore and ResponseCache against a real, private redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache import CacheSettings, RedisStore, ResponseCache
from cache.lookup import CacheLookup
from tests.cache.support import BowEmbedder, Embed, chat, completion, look
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis


def settings(server: RedisServer, **overrides: Any) -> CacheSettings:
    values: dict[str, Any] = {"store": "redis", "retry_after_s": 0.05, **overrides}
    return CacheSettings(**values)


OpenCache = Callable[[CacheSettings], Awaitable[ResponseCache]]


@pytest.fixture
async def open_cache(redis_server: RedisServer) -> AsyncIterator[OpenCache]:
    """Caches on the test's Redis, each with a client of its own as a replica would have; the
    clients are closed at the end (the store never closes a client it was given)."""
    clients: list[aioredis.Redis] = []

    async def open_(s: CacheSettings) -> ResponseCache:
        client = aioredis.Redis.from_url(
            redis_server.url, socket_timeout=0.25, socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0),
        )
        clients.append(client)
        cache = ResponseCache(s, RedisStore(client, max_entries=s.max_entries, ttl_s=s.ttl_s), BowEmbedder())
        await cache.start()
        return cache

    yield open_
    for client in clients:
        await client.aclose()


@pytest.fixture
async def replicas(
    redis_server: RedisServer, open_cache: OpenCache
) -> AsyncIterator[tuple[ResponseCache, ResponseCache]]:
    s = settings(redis_server)
    a, b = await open_cache(s), await open_cache(s)
    yield a, b
    await a.aclose()
    await b.aclose()


async def until(check: Callable[[], Awaitable[CacheLookup]], want: str, within: float) -> CacheLookup:
    """Poll a lookup until its status is `want` or `within` seconds pass; the last lookup."""
    deadline = time.monotonic() + within
    while True:
        lookup = await check()
        if lookup.status == want or time.monotonic() >= deadline:
            return lookup


async def test_replicas_serve_each_others_entries_within_a_second(
        replicas: tuple[ResponseCache, ResponseCache]) -> None:
    a, b = replicas
    # b has looked at the partition before a writes, so b's index must learn of the new entry
    assert (await look(b, "t1", chat("how can i reset my password"), Embed())).reason == "no_candidate"
    miss = await look(a, "t1", chat("How do I reset my password?"), Embed())
    assert await a.store(miss, completion("Use the link."))
    written = time.monotonic()
    exact = await look(b, "t1", chat("How do I reset my password?"), Embed())
    assert exact.status == "exact"
    semantic = await until(lambda: look(b, "t1", chat("how can i reset my password"), Embed()), "semantic", 1.0)
    assert semantic.status == "semantic", semantic
    assert time.monotonic() - written < 1.0
    assert semantic.response is not None and semantic.response["choices"][0]["message"]["content"] == "Use the link."


async def test_tenants_never_share_through_redis(replicas: tuple[ResponseCache, ResponseCache]) -> None:
    a, b = replicas
    lookup = await look(a, "alice", chat("What is my balance?"), Embed())
    assert await a.store(lookup, completion("Alice: 10"))
    for text in ("What is my balance?", "what is my balance"):
        assert (await look(b, "bob", chat(text), Embed())).status == "miss"


async def test_entries_survive_a_gateway_restart(redis_server: RedisServer, open_cache: OpenCache) -> None:
    s = settings(redis_server)
    first = await open_cache(s)
    lookup = await look(first, "t1", chat("How do I reset my password?"), Embed())
    assert await first.store(lookup, completion())
    await first.aclose()
    second = await open_cache(s)
    assert second.health()["entries"] == 1
    assert (await look(second, "t1", chat("how can i reset my password"), Embed())).status == "semantic"
    await second.aclose()


async def test_redis_down_means_bypass_then_recovery(redis_server: RedisServer, open_cache: OpenCache) -> None:
    cache = await open_cache(settings(redis_server))
    lookup = await look(cache, "t1", chat("How do I reset my password?"), Embed())
    assert await cache.store(lookup, completion())
    redis_server.stop()

    down = await look(cache, "t1", chat("How do I reset my password?"), Embed())
    assert (down.status, down.reason, down.storable) == ("bypass", "store_down", False)
    assert down.elapsed_s < 1.0
    quick = await look(cache, "t1", chat("Anything else?"), Embed())  # inside retry_after: no Redis call
    assert (quick.status, quick.reason) == ("bypass", "store_down")
    assert not await cache.store(quick, completion())
    health = cache.health()
    assert health["up"] is False and health["bypassed"] >= 2 and health["last_error"]

    redis_server.start()  # an empty Redis on the same port: the data was in memory only
    back = await until(lambda: look(cache, "t1", chat("How do I reset my password?"), Embed()), "miss", 5.0)
    assert (back.status, back.reason) == ("miss", "no_candidate")
    assert cache.health()["up"] is True
    assert await cache.store(back, completion("fresh"))
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "exact"
    assert (await look(cache, "t1", chat("how can i reset my password"), Embed())).status == "semantic"
    await cache.aclose()


async def test_start_with_redis_down_serves_uncached(redis_server: RedisServer, open_cache: OpenCache) -> None:
    s = settings(redis_server)
    redis_server.stop()
    cache = await open_cache(s)
    assert cache.health()["up"] is False
    assert (await look(cache, "t1", chat("hello"), Embed())).status == "bypass"
    redis_server.start()
    back = await until(lambda: look(cache, "t1", chat("hello"), Embed()), "miss", 5.0)
    assert back.status == "miss"
    await cache.aclose()


async def test_absolute_ttl_in_redis(redis_server: RedisServer, open_cache: OpenCache) -> None:
    cache = await open_cache(settings(redis_server, ttl_s=0.4, sync_interval_s=0.0))
    lookup = await look(cache, "t1", chat("How do I reset my password?"), Embed())
    assert await cache.store(lookup, completion())
    stored = time.monotonic()
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "exact"
    gone = await until(lambda: look(cache, "t1", chat("How do I reset my password?"), Embed()), "miss", 3.0)
    assert gone.status == "miss" and time.monotonic() - stored >= 0.35
    assert (await look(cache, "t1", chat("how can i reset my password"), Embed())).status == "miss"
    await cache.aclose()


async def test_lru_cap_in_redis(redis_server: RedisServer, open_cache: OpenCache) -> None:
    cache = await open_cache(settings(redis_server, max_entries=2))
    for text in ("first question here", "second question here"):
        lookup = await look(cache, "t1", chat(text), Embed())
        assert await cache.store(lookup, completion())
    assert (await look(cache, "t1", chat("first question here"), Embed())).status == "exact"
    lookup = await look(cache, "t1", chat("third question here"), Embed())
    assert await cache.store(lookup, completion())
    assert (await look(cache, "t1", chat("second question here"), Embed())).status == "miss"
    assert (await look(cache, "t1", chat("first question here"), Embed())).status == "exact"
    assert cache.health()["entries"] == 2
    assert await cache.store_backend.count() == 2
    await cache.aclose()


async def test_contradiction_tightens_an_entry_for_every_replica(
        replicas: tuple[ResponseCache, ResponseCache]) -> None:
    a, b = replicas
    lookup = await look(a, "t1", chat("How do I reset my password?"), Embed())
    assert await a.store(lookup, completion())
    hit = await until(lambda: look(b, "t1", chat("how can i reset my password"), Embed()), "semantic", 1.0)
    assert hit.status == "semantic"
    await b.report(hit, agreed=False)
    again = await look(a, "t1", chat("how can i reset my password"), Embed())
    assert (again.status, again.reason) == ("miss", "below_threshold")


async def test_restoring_an_exact_key_replaces_the_old_entry(redis_server: RedisServer, open_cache: OpenCache) -> None:
    cache = await open_cache(settings(redis_server))
    for answer in ("one", "two"):
        lookup = await look(cache, "t1", chat("Where is my parcel?"), Embed(), no_cache=True)
        assert await cache.store(lookup, completion(answer))
    assert await cache.store_backend.count() == 1
    hit = await look(cache, "t1", chat("where is my parcel"), Embed())
    assert hit.status == "semantic" and hit.response is not None
    assert hit.response["choices"][0]["message"]["content"] == "two"
    await cache.aclose()
