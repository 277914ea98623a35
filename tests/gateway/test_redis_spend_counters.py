"""The shared spend counters on a real Redis: reservations refuse past a budget, and settlements
that end together are summed into one script call without losing a cent or a hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway.budgets import Counter, RedisSpendCounters
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis

KEY_DAY = Counter("key:k1", "key", "daily", "d1", 4e9, limit=10.0)
TENANT_DAY = Counter("tenant:acme", "tenant", "daily", "d1", 4e9)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    yield r
    await r.aclose()


def spend_store_errors() -> float:
    return REGISTRY.get_sample_value("switchyard_store_errors_total", {"store": "spend"}) or 0.0


async def script_calls(r: aioredis.Redis) -> int:
    stats = await r.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


async def test_settlements_that_end_together_land_in_one_round_trip(client: aioredis.Redis) -> None:
    counters = RedisSpendCounters(client, "t:")
    both = [KEY_DAY, TENANT_DAY]
    for _ in range(40):
        assert await counters.reserve(both, 0.2) is None
    assert await counters.reserve(both, 2.2) is not None  # 8.0 held: 2.2 more would pass the key's 10
    await counters.settle(both, 0.2, 0.05)  # one alone loads the script
    before = await script_calls(client)

    await asyncio.gather(*(counters.settle(both, 0.2, 0.05) for _ in range(39)))

    assert await script_calls(client) - before == 1
    for spent, held in await counters.read(both):
        assert spent == pytest.approx(40 * 0.05) and held == pytest.approx(0.0, abs=1e-9)
    assert await counters.reserve(both, 7.9) is None  # 2.0 spent, nothing held: room for 8.0


async def test_a_settlement_that_arrives_during_a_round_trip_goes_in_the_next(client: aioredis.Redis) -> None:
    counters = RedisSpendCounters(client, "t:")
    await counters.settle([KEY_DAY], 0.0, 0.5)  # loads the script
    before = await script_calls(client)
    first = asyncio.ensure_future(counters.settle([KEY_DAY], 0.0, 1.0))
    await asyncio.sleep(0)  # `first` queues its settlement and starts the sender
    await asyncio.sleep(0)  # the sender takes what is queued and sends it
    later = asyncio.ensure_future(counters.settle([KEY_DAY, TENANT_DAY], 0.0, 2.0))
    await asyncio.gather(first, later)
    assert await script_calls(client) - before == 2
    (key, _), (tenant, _) = await counters.read([KEY_DAY, TENANT_DAY])
    assert key == pytest.approx(3.5) and tenant == pytest.approx(2.0)


async def test_a_caller_cancelled_while_its_settlement_waits_still_has_it_land(client: aioredis.Redis) -> None:
    counters = RedisSpendCounters(client, "t:")
    assert await counters.reserve([KEY_DAY], 3.0) is None
    gone = asyncio.ensure_future(counters.settle([KEY_DAY], 3.0, 1.0))
    stays = asyncio.ensure_future(counters.settle([TENANT_DAY], 0.0, 1.0))
    await asyncio.sleep(0)  # both queue their settlements
    gone.cancel()
    await stays  # batches land in order: the cancelled caller's was in this one
    ((spent, held),) = await counters.read([KEY_DAY])
    assert spent == pytest.approx(1.0) and held == pytest.approx(0.0)


async def test_settlements_redis_cannot_take_are_counted_and_the_next_ones_land(
    redis_server: RedisServer, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    counters = RedisSpendCounters(client, "t:")
    before = spend_store_errors()
    redis_server.stop()
    with caplog.at_level(logging.WARNING, "gateway.budgets"):
        await asyncio.gather(*(counters.settle([KEY_DAY], 0.0, 1.0) for _ in range(5)))
    assert spend_store_errors() > before
    assert "could not settle spend for 5 requests" in caplog.text
    redis_server.start()
    await counters.settle([KEY_DAY], 0.0, 1.0)
    ((spent, _),) = await counters.read([KEY_DAY])
    assert spent == pytest.approx(1.0)
