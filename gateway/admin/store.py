"""Keys, budgets and spend in Redis: what the admin API does, without HTTP.

A new key's secret is returned once and only its digest is kept. Rotating and revoking are Lua
scripts that check the key's current digest, so two admins acting at once cannot leave an old
secret working.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from gateway.admin.records import KeyRecord, RedisNames, key_scope, team_scope, tenant_scope
from gateway.auth import hash_key
from gateway.budgets import SpendCounters, counters_for
from gateway.settings import BudgetSettings

__all__ = ["AdminStore", "KeyConflict", "new_secret"]

SECRET_PREFIX = "sk-sy-"

# KEYS: the index. ARGV: id, expected digest, new digest (or '' to revoke), new record, key name prefix.
_SWAP = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then return 0 end
redis.call('DEL', ARGV[5] .. current)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('SET', ARGV[5] .. ARGV[3], ARGV[4])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
"""


class KeyConflict(Exception):
    """The key changed while this request was changing it."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class AdminStore:
    def __init__(self, redis: Any, prefix: str, counters: SpendCounters):
        self._redis = redis
        self.names = RedisNames(prefix)
        self._counters = counters
        self._swap = redis.register_script(_SWAP)

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, fields: dict[str, Any]) -> tuple[str, KeyRecord]:
        """A new key with `fields` (validated KeyRecord fields); returns its secret and record."""
        secret = new_secret()
        digest = hash_key(secret)
        record = KeyRecord.model_validate(
            {**fields, "id": "key_" + secrets.token_hex(8), "sha256": digest, "created_at": time.time()}
        )
        assert record.id is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.names.key(digest), record.model_dump_json(), nx=True)
            pipe.hset(self.names.index, record.id, digest)
            if record.team:
                pipe.sadd(self.names.teams(record.tenant), record.team)
            await pipe.execute()
        return secret, record

    async def get_key(self, key_id: str) -> KeyRecord | None:
        digest = await self._redis.hget(self.names.index, key_id)
        if digest is None:
            return None
        raw = await self._redis.get(self.names.key(digest.decode()))
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def list_keys(self, tenant: str | None = None, team: str | None = None) -> list[KeyRecord]:
        digests = [d.decode() for d in (await self._redis.hgetall(self.names.index)).values()]
        records = []
        if digests:
            for raw in await self._redis.mget([self.names.key(d) for d in digests]):
                if raw is not None:
                    records.append(KeyRecord.model_validate_json(raw))
        records = [r for r in records if (tenant is None or r.tenant == tenant) and (team is None or r.team == team)]
        return sorted(records, key=lambda r: (r.tenant, r.team or "", r.created_at or 0.0))

    async def rotate_key(self, key_id: str) -> tuple[str, KeyRecord] | None:
        """A new secret for the key; the old one stops working at once. None: no such key."""
        old = await self.get_key(key_id)
        if old is None or old.sha256 is None:
            return None
        secret = new_secret()
        digest = hash_key(secret)
        record = old.model_copy(update={"sha256": digest, "rotated_at": time.time()})
        swapped = await self._swap(
            keys=[self.names.index], args=[key_id, old.sha256, digest, record.model_dump_json(), self.names.key_prefix]
        )
        if not int(swapped):
            raise KeyConflict(key_id)
        return secret, record

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        old = await self.get_key(key_id)
        if old is None or old.sha256 is None:
            return None
        swapped = await self._swap(keys=[self.names.index], args=[key_id, old.sha256, "", "", self.names.key_prefix])
        if not int(swapped):
            raise KeyConflict(key_id)
        return old

    # -- budgets --------------------------------------------------------------------------------

    async def set_budget(self, scope: str, budget: BudgetSettings | None) -> None:
        if budget is None:
            await self._redis.delete(self.names.budget(scope))
        else:
            await self._redis.set(self.names.budget(scope), budget.model_dump_json())

    async def add_team(self, tenant: str, team: str) -> None:
        await self._redis.sadd(self.names.teams(tenant), team)

    async def budget(self, scope: str) -> BudgetSettings | None:
        raw = await self._redis.get(self.names.budget(scope))
        return None if raw is None else BudgetSettings.model_validate(orjson.loads(raw))

    async def teams(self, tenant: str) -> list[str]:
        return sorted(t.decode() for t in await self._redis.smembers(self.names.teams(tenant)))

    # -- spend ----------------------------------------------------------------------------------

    async def spend(self, level: str, scope: str, budget: BudgetSettings | None) -> dict[str, Any]:
        """This period's spend of one scope, day and month, with its budget and what is left."""
        now = time.time()
        budgets: dict[tuple[str, str], float] = {(scope, budget.period): budget.amount_usd} if budget else {}
        counters = counters_for([(level, scope)], budgets, now)
        out: dict[str, Any] = {"budget": budget.model_dump() if budget else None}
        for counter, (spent, held) in zip(counters, await self._counters.read(counters), strict=True):
            period: dict[str, Any] = {
                "period": counter.period_id,
                "spent_usd": round(spent, 12),
                "held_usd": round(max(0.0, held), 12),
                "resets_at": counter.reset_at,
            }
            if counter.limit is not None:
                period["remaining_usd"] = round(max(0.0, counter.limit - spent - max(0.0, held)), 12)
            out[counter.period] = period
        return out

    async def key_spend(self, record: KeyRecord) -> dict[str, Any]:
        assert record.id is not None
        return await self.spend("key", key_scope(record.id), record.budget)

    async def team_spend(self, tenant: str, team: str) -> dict[str, Any]:
        scope = team_scope(tenant, team)
        return {"tenant": tenant, "team": team, **await self.spend("team", scope, await self.budget(scope))}

    async def tenant_spend(self, tenant: str) -> dict[str, Any]:
        scope = tenant_scope(tenant)
        summary = {"tenant": tenant, **await self.spend("tenant", scope, await self.budget(scope))}
        summary["teams"] = [await self.team_spend(tenant, team) for team in await self.teams(tenant)]
        return summary
