"""Where entries live: `MemoryStore` (embedded default) and `RedisStore` (shared, persistent)."""

from __future__ import annotations

from typing import Any

from cache.settings import CacheSettings
from cache.stores.base import Changes, PutResult, Store, StoreUnavailable
from cache.stores.memory import MemoryStore
from cache.stores.redis import RedisStore

__all__ = ["Changes", "MemoryStore", "PutResult", "RedisStore", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: CacheSettings, redis: Any = None, prefix: str = "switchyard:cache") -> Store:
    """The store the settings name (not yet started: `ResponseCache.start` starts it). A Redis
    store uses the deployment's one client and keeps its keys under `prefix`."""
    if settings.store == "redis":
        if redis is None:
            raise ValueError("cache.store is 'redis' but no Redis client was given (set redis.url)")
        return RedisStore(redis, prefix=prefix, max_entries=settings.max_entries, ttl_s=settings.ttl_s)
    return MemoryStore(max_entries=settings.max_entries)
