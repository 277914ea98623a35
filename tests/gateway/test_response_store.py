"""The in-memory store of stored responses: tenant-scoped, capped, and holding nothing past its TTL."""

from __future__ import annotations

from gateway.openai.responses.store import MemoryResponseStore


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
