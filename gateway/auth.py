"""API keys → tenants. Keys are stored only as SHA-256 digests (config file or Redis)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import orjson

from gateway.context import Tenant
from gateway.errors import AuthenticationFailed
from gateway.settings import AuthSettings, LimitSettings

__all__ = ["KeyStore", "hash_key"]

log = logging.getLogger(__name__)

DEV_TENANT = "default"
REDIS_KEY_TTL = 10.0


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
        self._redis: Any = redis if auth.redis_keys else None
        self._prefix = prefix + "key:"
        self._tenants: dict[str, Tenant] = {}
        self._from_redis_cache: dict[str, tuple[Tenant, float]] = {}  # digest → (tenant, expiry)
        for k in auth.keys:
            self._tenants[k.sha256] = self._tenant(k.tenant, k.priority, k.rpm, k.tpm, k.models)
        self._dev = Tenant(DEV_TENANT, "interactive", limits.rpm, limits.tpm)

    def _tenant(self, name: str, priority: Any, rpm: int | None, tpm: int | None, models: Any) -> Tenant:
        return Tenant(
            name,
            priority if priority in ("interactive", "batch") else "interactive",
            rpm if rpm is not None else self._limits.rpm,
            tpm if tpm is not None else self._limits.tpm,
            frozenset(models) if models else None,
        )

    async def authenticate(self, authorization: str | None) -> Tenant:
        if self.mode == "none":
            return self._dev
        if not authorization:
            raise AuthenticationFailed("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <key>'.")
        digest = hash_key(key)
        tenant = self._tenants.get(digest)
        if tenant is None and self._redis is not None:
            cached = self._from_redis_cache.get(digest)
            if cached is not None and cached[1] > time.monotonic():
                tenant = cached[0]
            else:
                tenant = await self._from_redis(digest)
        if tenant is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return tenant

    async def _from_redis(self, digest: str) -> Tenant | None:
        try:
            raw = await self._redis.get(self._prefix + digest)
        except Exception as exc:  # a Redis outage must not turn into a 500
            log.warning("key lookup in Redis failed: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            record = orjson.loads(raw)
            stored = str(record.get("sha256", digest))
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not hmac.compare_digest(stored, digest):
            return None
        tenant = self._tenant(
            str(record["tenant"]), record.get("priority"), record.get("rpm"), record.get("tpm"), record.get("models")
        )
        # Remember it briefly: a revoked key stops working within REDIS_KEY_TTL seconds.
        if len(self._from_redis_cache) > 10_000:
            self._from_redis_cache.clear()
        self._from_redis_cache[digest] = (tenant, time.monotonic() + REDIS_KEY_TTL)
        return tenant
