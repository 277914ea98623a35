"""Entries in Redis: they survive a gateway restart and every replica sees them.

Keys under a prefix P:
  P:e:{id}      hash: meta (JSON), resp (JSON), vec (float32 bytes), scope, exact, thr, con;
                expires at the entry's absolute TTL (a hit does not extend it)
  P:x:{exact}   the id stored for an exact key, same expiry
  P:lru         sorted set id -> last use (a tick of P:tick, so order is exact): the cap evicts the lowest
  P:tick        counter behind the P:lru scores
  P:exp         sorted set "{scope}|{id}" -> expiry (ms): expired ids are swept from P:lru
  P:s:{scope}   stream per scope partition: "add" (id, vector, expiry) and "del" (id) records.
                Replicas read it from their own cursor on lookup, so an entry written by one
                replica is searchable on every other at its next lookup in that partition.
                Records older than the TTL only concern expired entries and are trimmed.

Writes run as Lua scripts, so a put, its sweep and its evictions are atomic. Every Redis error
becomes `StoreUnavailable`; the cache turns that into a bypass.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache.entry import CacheEntry
from cache.stores.base import Changes, PutResult, StoreUnavailable

__all__ = ["RedisStore"]

# Shared by put and delete: remove one entry everywhere and tell its partition.
_DROP = """
local function drop(prefix, id, log)
  local key = prefix .. ':e:' .. id
  local f = redis.call('HMGET', key, 'scope', 'exact')
  redis.call('DEL', key)
  redis.call('ZREM', prefix .. ':lru', id)
  if f[2] then
    local xk = prefix .. ':x:' .. f[2]
    if redis.call('GET', xk) == id then redis.call('DEL', xk) end
  end
  if f[1] then
    redis.call('ZREM', prefix .. ':exp', f[1] .. '|' .. id)
    if log and f[1] ~= '-' and redis.call('EXISTS', prefix .. ':s:' .. f[1]) == 1 then
      redis.call('XADD', prefix .. ':s:' .. f[1], '*', 'op', 'del', 'id', id)
    end
  end
  return f[1] ~= false
end
"""

# ARGV: prefix id meta resp vec scope exact expires_ms now_ms max_entries minid threshold
_PUT = _DROP + """
local prefix, id = ARGV[1], ARGV[2]
local scope, exact = ARGV[6], ARGV[7]
local expires_ms, now_ms, cap = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local expired = 0
local stale = redis.call('ZRANGEBYSCORE', prefix .. ':exp', '-inf', now_ms, 'LIMIT', 0, 256)
for _, member in ipairs(stale) do
  local sid = string.match(member, '|(.+)$')
  redis.call('ZREM', prefix .. ':exp', member)
  redis.call('ZREM', prefix .. ':lru', sid)
  expired = expired + 1
end
local old = redis.call('GET', prefix .. ':x:' .. exact)
if old then drop(prefix, old, true) end
local key = prefix .. ':e:' .. id
redis.call('HSET', key, 'meta', ARGV[3], 'resp', ARGV[4], 'vec', ARGV[5], 'scope', scope, 'exact', exact,
           'thr', ARGV[12], 'con', 0)
redis.call('PEXPIREAT', key, expires_ms)
redis.call('SET', prefix .. ':x:' .. exact, id, 'PXAT', expires_ms)
redis.call('ZADD', prefix .. ':lru', redis.call('INCR', prefix .. ':tick'), id)
redis.call('ZADD', prefix .. ':exp', expires_ms, scope .. '|' .. id)
if scope ~= '-' then
  local stream = prefix .. ':s:' .. scope
  redis.call('XADD', stream, 'MINID', '~', ARGV[11], '*', 'op', 'add', 'id', id, 'vec', ARGV[5],
             'exp', expires_ms)
  if redis.call('PEXPIRETIME', stream) < expires_ms then redis.call('PEXPIREAT', stream, expires_ms) end
end
local evicted = 0
while redis.call('ZCARD', prefix .. ':lru') > cap do
  local victim = redis.call('ZPOPMIN', prefix .. ':lru')
  drop(prefix, victim[1], true)
  evicted = evicted + 1
end
return {evicted, expired, redis.call('ZCARD', prefix .. ':lru')}
"""

# ARGV: prefix exact -> {id, meta, resp, thr, con} or nil
_GET_EXACT = """
local prefix = ARGV[1]
local id = redis.call('GET', prefix .. ':x:' .. ARGV[2])
if not id then return nil end
local f = redis.call('HMGET', prefix .. ':e:' .. id, 'meta', 'resp', 'thr', 'con')
if not f[1] then return nil end
redis.call('ZADD', prefix .. ':lru', 'XX', redis.call('INCR', prefix .. ':tick'), id)
return {id, f[1], f[2], f[3], f[4]}
"""

# ARGV: prefix id
_TOUCH = """
redis.call('ZADD', ARGV[1] .. ':lru', 'XX', redis.call('INCR', ARGV[1] .. ':tick'), ARGV[2])
"""

_DELETE = _DROP + """
return drop(ARGV[1], ARGV[2], true) and 1 or 0
"""


class RedisStore:
    kind = "redis"

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "switchyard:cache", max_entries: int = 100_000,
                 ttl_s: float = 86_400.0):
        """`redis` is the deployment's shared client (bytes, not decoded), owned and closed by its
        creator. It should fail fast (short timeouts, no retries): a failure must surface at once
        so the cache can bypass."""
        self.prefix = prefix
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._redis = redis
        self._put = self._redis.register_script(_PUT)
        self._get_exact = self._redis.register_script(_GET_EXACT)
        self._delete = self._redis.register_script(_DELETE)
        self._touch = self._redis.register_script(_TOUCH)

    @asynccontextmanager
    async def _io(self) -> AsyncIterator[None]:
        """The one place Redis exceptions become ours."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def start(self) -> None:
        await self.ping()

    async def aclose(self) -> None:
        pass  # the client belongs to whoever made it

    async def ping(self) -> None:
        async with self._io():
            await self._redis.ping()

    async def put(self, entry: CacheEntry) -> PutResult:
        now_ms = int(time.time() * 1000)
        vector = entry.vector.astype(np.float32).tobytes() if entry.vector is not None else b""
        scope = entry.scope_key if entry.scope_key is not None and entry.vector is not None else "-"
        minid = max(0, now_ms - int(self.ttl_s * 1000))
        args: list[Any] = [
            self.prefix, entry.id, entry.meta_json(), _json(entry.response), vector, scope, entry.exact_key,
            int(entry.expires_at * 1000), now_ms, self.max_entries, minid, repr(entry.threshold),
        ]
        async with self._io():
            evicted, expired, entries = await self._put(keys=[], args=args)
        return PutResult(evicted=int(evicted), expired=int(expired), entries=int(entries))

    async def get_exact(self, exact_key: str) -> CacheEntry | None:
        async with self._io():
            found = await self._get_exact(keys=[], args=[self.prefix, exact_key])
        if not found:
            return None
        _, meta, resp, thr, con = found
        return CacheEntry.from_parts(meta, resp, float(thr or 0), int(con or 0))

    async def get(self, entry_ids: Sequence[str]) -> list[CacheEntry | None]:
        if not entry_ids:
            return []
        async with self._io():
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in entry_ids:
                pipe.hmget(self._entry_key(entry_id), "meta", "resp", "thr", "con")
            rows = await pipe.execute()
        out: list[CacheEntry | None] = []
        for meta, resp, thr, con in rows:
            out.append(CacheEntry.from_parts(meta, resp, float(thr or 0), int(con or 0)) if meta else None)
        return out

    async def touch(self, entry_id: str) -> None:
        async with self._io():
            await self._touch(keys=[], args=[self.prefix, entry_id])

    async def changes(self, scope_key: str, cursor: str | None) -> Changes:
        stream = f"{self.prefix}:s:{scope_key}"
        async with self._io():
            pipe = self._redis.pipeline(transaction=False)
            pipe.exists(stream)
            pipe.xrange(stream, min=f"({cursor}" if cursor else "-", max="+")
            exists, records = await pipe.execute()
        if not exists:
            return Changes(cursor=None, reset=cursor is not None)
        result = Changes(cursor=cursor)
        for record_id, fields in records:
            result.cursor = record_id.decode()
            entry_id = fields[b"id"].decode()
            if fields[b"op"] == b"add":
                vector = np.frombuffer(fields[b"vec"], dtype=np.float32)
                result.added.append((entry_id, vector, int(fields[b"exp"]) / 1000))
            else:
                result.removed.append(entry_id)
        return result

    async def update(self, entry_id: str, *, threshold: float, contradictions: int) -> None:
        key = self._entry_key(entry_id)
        async with self._io():
            # only if the entry still exists: HSET on a missing key would create one without TTL
            if await self._redis.exists(key):
                await self._redis.hset(key, mapping={"thr": repr(threshold), "con": contradictions})

    async def delete(self, entry_id: str) -> bool:
        async with self._io():
            return bool(await self._delete(keys=[], args=[self.prefix, entry_id]))

    async def count(self) -> int:
        async with self._io():
            return int(await self._redis.zcard(f"{self.prefix}:lru"))

    def _entry_key(self, entry_id: str) -> str:
        return f"{self.prefix}:e:{entry_id}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
