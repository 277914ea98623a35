"""Stored responses: what `previous_response_id`, `GET /v1/responses/{id}` and its `input_items`
read back. Tenant-scoped (the key holds the tenant, so another tenant's id is simply not found),
kept in memory or in the deployment's Redis with a TTL (shared by replicas, survives restarts).

A record is {"response": the response object, "input": this request's input items, "history":
the whole conversation up to and including this response's output, as input items}.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson
from redis.exceptions import RedisError

from gateway.errors import Overloaded
from gateway.types import JSON

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MemoryResponseStore", "RedisResponseStore", "ResponseStore"]


class ResponseStore(Protocol):
    async def get(self, tenant: str, response_id: str) -> JSON | None: ...

    async def put(self, tenant: str, response_id: str, record: JSON) -> None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...


class MemoryResponseStore:
    """One process's store: the oldest records go first past `max_entries`, and at their TTL."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._records: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def get(self, tenant: str, response_id: str) -> JSON | None:
        entry = self._records.get((tenant, response_id))
        if entry is None:
            return None
        expires, data = entry
        if expires < self.clock():
            del self._records[(tenant, response_id)]
            return None
        return orjson.loads(data)  # type: ignore[no-any-return]

    async def put(self, tenant: str, response_id: str, record: JSON) -> None:
        # Serialised: a later change to the caller's objects must not change what was stored.
        now = self.clock()
        self._records[(tenant, response_id)] = (now + self.ttl, orjson.dumps(record))
        self._records.move_to_end((tenant, response_id))
        # One TTL for all, so the oldest expire first: drop them, or expired records would be held
        # until the cap pushed them out.
        while self._records and next(iter(self._records.values()))[0] < now:
            self._records.popitem(last=False)
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self._records.pop((tenant, response_id), None) is not None

    def __len__(self) -> int:
        """Records held, expired ones not yet dropped included."""
        return len(self._records)


class RedisResponseStore:
    """Records in Redis under `<prefix><tenant>:<id>`, expiring after the TTL. Redis being
    unreachable is a 503: a conversation must not continue from a state it cannot read."""

    def __init__(self, redis: Redis, prefix: str, ttl: float):
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self.prefix}{tenant}:{response_id}"

    async def get(self, tenant: str, response_id: str) -> JSON | None:
        try:
            data = await self.redis.get(self._key(tenant, response_id))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return orjson.loads(data) if data else None

    async def put(self, tenant: str, response_id: str, record: JSON) -> None:
        try:
            await self.redis.set(self._key(tenant, response_id), orjson.dumps(record), px=self.ttl_ms)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None

    async def delete(self, tenant: str, response_id: str) -> bool:
        try:
            return bool(await self.redis.delete(self._key(tenant, response_id)))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None


def _unavailable(exc: BaseException) -> Overloaded:
    return Overloaded(f"The stored responses are unreachable right now ({type(exc).__name__}); retry.", retry_after=1.0)
