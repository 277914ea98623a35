"""Stored responses: what `previous_response_id`, `GET /v1/responses/{id}` and its `input_items`
read back. Tenant-scoped (the key holds the tenant, so another tenant's id is simply not found),
kept in memory or in the deployment's Redis with a TTL (shared by replicas, survives restarts).

A record is {"response": the response object, "input": this request's input items, "history":
the whole conversation up to and including this response's output, as input items}.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import Overloaded
from gateway.types import JSON

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MemoryResponseStore", "RedisResponseStore", "ResponseStore"]

T = TypeVar("T")

# Errors worth asking again: the call may go through a moment later. Others (a wrong type, an
# authentication error) would fail the same way again.
_TRANSIENT = (RedisTimeoutError, RedisConnectionError, TimeoutError, OSError)


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
    """Records in Redis under `<prefix><tenant>:<id>`, expiring after the TTL.

    The shared Redis client gives up quickly (its other users have a fallback), but a conversation
    has none: it cannot continue from a state it cannot read, and its turn will take far longer
    than a second upstream anyway. So a call that fails transiently is asked again, with backoff,
    for up to `patience` seconds; only then is Redis being unreachable a 503."""

    def __init__(self, redis: Redis, prefix: str, ttl: float, patience: float = 2.0):
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.patience = patience

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self.prefix}{tenant}:{response_id}"

    async def get(self, tenant: str, response_id: str) -> JSON | None:
        data = await self._call(lambda: self.redis.get(self._key(tenant, response_id)))
        return orjson.loads(data) if data else None

    async def put(self, tenant: str, response_id: str, record: JSON) -> None:
        data = orjson.dumps(record)
        await self._call(lambda: self.redis.set(self._key(tenant, response_id), data, px=self.ttl_ms))

    async def delete(self, tenant: str, response_id: str) -> bool:
        return bool(await self._call(lambda: self.redis.delete(self._key(tenant, response_id))))

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.patience
        backoff = 0.05
        while True:
            try:
                return await op()
            except _TRANSIENT as exc:
                if time.monotonic() + backoff > deadline:
                    raise _unavailable(exc) from None
            except RedisError as exc:
                raise _unavailable(exc) from None
            await asyncio.sleep(backoff)  # backoff between tries, not synchronisation
            backoff = min(2 * backoff, 0.4)


def _unavailable(exc: BaseException) -> Overloaded:
    return Overloaded(f"The stored responses are unreachable right now ({type(exc).__name__}); retry.", retry_after=1.0)
