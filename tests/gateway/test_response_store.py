"""The stores of stored responses: in memory tenant-scoped, capped and holding nothing past its TTL;
in Redis patient with a stalled server."""

from __future__ import annotations

import asyncio
import signal

import pytest

from gateway.errors import Overloaded
from gateway.openai.responses.store import MemoryResponseStore, RedisResponseStore
from gateway.services import _redis_client
from gateway.settings import Settings
from tests.support.processes import RedisServer


async def test_expired_records_are_dropped_without_being_read() -> None:
    clock = [0.0]
    store = MemoryResponseStore(ttl=10.0, max_entries=100, clock=lambda: clock[0])
    await store.put("a", "resp_1", {"response": {"id": "resp_1"}})
    await store.put("b", "resp_2", {"response": {"id": "resp_2"}})
    clock[0] = 5.0
    await store.put("a", "resp_3", {"response": {"id": "resp_3"}})
    assert len(store) == 3
    clock[0] = 12.0  # the first two are past their TTL, the third is not
    await store.put("a", "resp_4", {"response": {"id": "resp_4"}})
    assert len(store) == 2
    assert await store.get("a", "resp_1") is None
    assert await store.get("a", "resp_3") == {"response": {"id": "resp_3"}}
    assert await store.get("b", "resp_3") is None  # another tenant's id is not found


async def test_the_oldest_go_first_past_the_cap() -> None:
    store = MemoryResponseStore(ttl=60.0, max_entries=2, clock=lambda: 0.0)
    for i in range(3):
        await store.put("a", f"resp_{i}", {"i": i})
    assert len(store) == 2
    assert await store.get("a", "resp_0") is None
    assert await store.get("a", "resp_2") == {"i": 2}


# -- in Redis: a conversation waits out a stall of Redis rather than failing its turn -------------


def _store(redis_url: str, patience: float) -> RedisResponseStore:
    # The gateway's own shared client: it gives up on a call after a quarter of a second.
    client = _redis_client(Settings.model_validate({"auth": {"mode": "none"}, "redis": {"url": redis_url}}))
    assert client is not None
    return RedisResponseStore(client, "sy:response:", ttl=60.0, patience=patience)


async def test_a_stored_response_is_read_through_a_redis_stall_longer_than_the_clients_timeout(
    redis_server: RedisServer,
) -> None:
    store = _store(redis_server.url, patience=3.0)
    await store.put("a", "resp_1", {"response": {"id": "resp_1"}})
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # Redis stops answering, as under CPU starvation
    # ... for 1.2 s: the shared client alone (3 tries of 0.25 s) would have given up by then.
    asyncio.get_running_loop().call_later(1.2, redis_server.proc.send_signal, signal.SIGCONT)
    try:
        assert await store.get("a", "resp_1") == {"response": {"id": "resp_1"}}
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await store.redis.aclose()


async def test_redis_gone_for_longer_than_the_patience_is_a_503_with_retry_after(redis_server: RedisServer) -> None:
    store = _store(redis_server.url, patience=0.5)
    await store.put("a", "resp_1", {"response": {"id": "resp_1"}})
    redis_server.stop()
    with pytest.raises(Overloaded) as refused:
        await store.get("a", "resp_1")
    assert refused.value.status == 503 and refused.value.retry_after
    assert "unreachable" in refused.value.message
    await store.redis.aclose()
