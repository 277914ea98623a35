"""Where entries live: `MemoryStore` (embedded default) and `RedisStore` (shared, persistent)."""

from __future__ import annotations

from cache.settings import CacheSettings
from cache.stores.base import Changes, PutResult, Store, StoreUnavailable
from cache.stores.memory import MemoryStore
from cache.stores.redis import RedisStore

__all__ = ["Changes", "MemoryStore", "PutResult", "RedisStore", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: CacheSettings) -> Store:
    """The store the settings name (not yet started: `ResponseCache.start` starts it)."""
    if settings.store == "redis":
        assert settings.redis_url is not None  # the settings validator guarantees it
        return RedisStore(settings.redis_url, prefix=settings.key_prefix, max_entries=settings.max_entries,
                          ttl_s=settings.ttl_s, timeout_s=settings.redis_timeout_s)
    return MemoryStore(max_entries=settings.max_entries)
