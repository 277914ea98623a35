"""Response cache: exact and semantic layers, scoped per tenant, guarded against false hits.

Front door: `ResponseCache`. See DESIGN.md ("Cache") and cache/response_cache.py.
"""

from cache.decision import Calibration, load_calibration
from cache.embedder import Embedder, SentenceEmbedder, bundled_minilm_path
from cache.guards import GuardPolicy, Verdict
from cache.lookup import CacheLookup
from cache.response_cache import EmbedFn, ResponseCache
from cache.settings import CacheSettings, CacheSwitch
from cache.stores import MemoryStore, RedisStore, Store, StoreUnavailable, open_store

__all__ = [
    "CacheLookup",
    "CacheSettings",
    "CacheSwitch",
    "Calibration",
    "EmbedFn",
    "Embedder",
    "GuardPolicy",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "SentenceEmbedder",
    "Store",
    "StoreUnavailable",
    "Verdict",
    "bundled_minilm_path",
    "load_calibration",
    "open_store",
]
