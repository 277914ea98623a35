"""API keys → tenants. Keys are stored only as SHA-256 digests (config file or Redis).

Keys in Redis (written by the admin API, gateway/admin/) are trusted for
`auth.redis_cache_seconds` (under a second) before they are read again, so a key created on one
replica works on every other within that time, and a revoked one stops. A key's team and tenant
budgets are read with it. While Redis is unreachable, keys already known keep working.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import replace
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.admin.records import KeyRecord, RedisNames, key_scope, team_scope, tenant_scope
from gateway.context import Budget, Tenant
from gateway.errors import AuthenticationFailed, Overloaded
from gateway.settings import AuthSettings, BudgetSettings, LimitSettings

__all__ = ["KeyStore", "hash_key"]

log = logging.getLogger(__name__)

DEV_TENANT = "default"
_CACHE_LIMIT = 100_000


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Looks up the tenant for a presented key by its digest.

    The dictionary lookup is by digest, so its timing reveals nothing about the key; the final
    `compare_digest` keeps the comparison itself constant-time as well.
    """

    def __init__(self, auth: AuthSettings, limits: LimitSettings, redis: Any = None, prefix: str = "switchyard:"):
        self.mode = auth.mode
        self._limits = limits
        self._redis: Any = redis
        self._redis_keys = redis is not None and auth.redis_keys
        self._names = RedisNames(prefix)
        self._ttl = auth.redis_cache_seconds
        self._tenants: dict[str, Tenant] = {}
        self._from_redis_cache: dict[str, tuple[Tenant, float]] = {}  # digest → (tenant, read at)
        self._inflight: dict[str, asyncio.Future[Tenant | None]] = {}
        for k in auth.keys:
            key_id = "cfg-" + k.sha256[:12]
            budgets = (_budget("key", key_scope(key_id), k.budget),) if k.budget else ()
            self._tenants[k.sha256] = self._tenant(
                k.tenant, k.priority, k.rpm, k.tpm, k.models, team=k.team, key_id=key_id, budgets=budgets
            )
        self._dev = Tenant(DEV_TENANT, "interactive", limits.rpm, limits.tpm)

    def _tenant(self, name: str, priority: Any, rpm: int | None, tpm: int | None, models: Any, **extra: Any) -> Tenant:
        return Tenant(
            name,
            priority if priority in ("interactive", "batch") else "interactive",
            rpm if rpm is not None else self._limits.rpm,
            tpm if tpm is not None else self._limits.tpm,
            frozenset(models) if models else None,
            **extra,
        )

    async def authenticate(self, authorization: str | None, api_key: str | None = None) -> Tenant:
        """The tenant of the key presented as `Authorization: Bearer <key>` (OpenAI's way) or as
        `x-api-key: <key>` (Anthropic's); the Authorization header wins when both are sent."""
        if self.mode == "none":
            return self._dev
        if authorization:
            scheme, _, key = authorization.partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key:
                raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <key>'.")
        elif api_key and api_key.strip():
            key = api_key.strip()
        else:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
        digest = hash_key(key)
        if self._redis is None:
            tenant = self._tenants.get(digest)
        else:
            tenant = await self._lookup(digest)
        if tenant is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if tenant.expires_at is not None and tenant.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return tenant

    async def _lookup(self, digest: str) -> Tenant | None:
        """The cached answer while it is younger than the TTL (refreshed in the background once
        past half of it, so busy keys never wait for Redis); otherwise one read shared by every
        request that asks meanwhile."""
        cached = self._from_redis_cache.get(digest)
        if cached is not None:
            age = time.monotonic() - cached[1]
            if age < self._ttl:
                if age >= self._ttl / 2 and digest not in self._inflight:
                    self._shared_refresh(digest, cached[0]).add_done_callback(_quiet)
                return cached[0]
        return await asyncio.shield(self._shared_refresh(digest, cached[0] if cached is not None else None))

    def _shared_refresh(self, digest: str, stale: Tenant | None) -> asyncio.Future[Tenant | None]:
        task = self._inflight.get(digest)
        if task is None:
            task = self._inflight[digest] = asyncio.ensure_future(self._refresh(digest, stale))
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return task

    async def _refresh(self, digest: str, stale: Tenant | None) -> Tenant | None:
        """Read the key (and its team's and tenant's budgets) from Redis again. On a Redis error
        the last known answer stands: an outage must not lock every client out."""
        try:
            tenant = self._tenants.get(digest)
            if tenant is None and self._redis_keys:
                tenant = await self._from_redis(digest)
            if tenant is not None:
                tenant = await self._with_shared_budgets(tenant)
        except Exception as exc:  # a Redis outage must not turn into a 500
            log.warning("key lookup in Redis failed: %s", type(exc).__name__)
            known = stale if stale is not None else self._tenants.get(digest)
            if known is None and self._redis_keys:
                # Not "wrong key": the key could not be checked. A client retries a 503.
                raise Overloaded("The key store is unavailable; retry shortly.", retry_after=1.0) from None
            if known is not None:  # trusted for another TTL: requests do not each wait on a dead Redis
                self._from_redis_cache[digest] = (known, time.monotonic())
            return known
        if tenant is not None:
            if len(self._from_redis_cache) > _CACHE_LIMIT:
                self._from_redis_cache.clear()
            self._from_redis_cache[digest] = (tenant, time.monotonic())
        else:
            self._from_redis_cache.pop(digest, None)
        return tenant

    async def _from_redis(self, digest: str) -> Tenant | None:
        raw = await self._redis.get(self._names.key(digest))
        if raw is None:
            return None
        try:
            record = KeyRecord.model_validate_json(raw)
        except ValidationError:
            log.warning("a key record in Redis is malformed; ignoring it")
            return None
        stored = record.sha256 or digest
        if not hmac.compare_digest(stored, digest):
            return None
        key_id = record.id or "redis-" + digest[:12]
        budgets = (_budget("key", key_scope(key_id), record.budget),) if record.budget else ()
        return self._tenant(
            record.tenant, record.priority, record.rpm, record.tpm, record.models,
            team=record.team, key_id=key_id, budgets=budgets, expires_at=record.expires_at,
            # A managed key's rpm/tpm are its own; a hand-written record shares its tenant's bucket.
            limit_scope=key_scope(key_id) if record.id else "",
        )  # fmt: skip

    async def _with_shared_budgets(self, tenant: Tenant) -> Tenant:
        scopes = [tenant_scope(tenant.name)]
        levels = ["tenant"]
        if tenant.team:
            scopes.append(team_scope(tenant.name, tenant.team))
            levels.append("team")
        raws = await self._redis.mget([self._names.budget(s) for s in scopes])
        budgets = list(tenant.budgets)
        for level, scope, raw in zip(levels, scopes, raws, strict=True):
            if raw is None:
                continue
            try:
                budgets.append(_budget(level, scope, BudgetSettings.model_validate(orjson.loads(raw))))
            except (orjson.JSONDecodeError, ValidationError):
                log.warning("the %s budget in Redis is malformed; ignoring it", level)
        if len(budgets) == len(tenant.budgets):
            return tenant
        return replace(tenant, budgets=tuple(budgets))


def _quiet(task: asyncio.Future[Tenant | None]) -> None:
    """A background refresh's error is the next request's to see, not an unretrieved exception."""
    if not task.cancelled():
        task.exception()


def _budget(level: str, scope: str, budget: BudgetSettings) -> Budget:
    return Budget(level, scope, budget.amount_usd, budget.period)
