"""What the cache needs from a store of entries, and the one exception stores raise.

A store keeps entries by id, finds one by exact key, evicts least recently used entries beyond a
cap, and keeps, for each scope partition, a log of vectors added and removed. Replicas read that
log from their own cursor to keep their local nearest-neighbour indexes in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cache.entry import CacheEntry, Vector

__all__ = ["Changes", "PutResult", "Store", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store cannot be reached or failed; the cache bypasses it until it answers again."""


@dataclass
class Changes:
    """A partition's log since a cursor."""

    cursor: str | None
    added: list[tuple[str, Vector, float]] = field(default_factory=list)  # (id, vector, expires_at)
    removed: list[str] = field(default_factory=list)
    reset: bool = False  # the log is gone (expired, flushed): drop what you hold and start over


@dataclass
class PutResult:
    evicted: int = 0  # least recently used entries dropped to respect the cap
    expired: int = 0  # entries found past their TTL and cleaned up
    entries: int = 0  # entries held after the put


class Store(Protocol):
    kind: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def ping(self) -> None: ...

    async def put(self, entry: CacheEntry) -> PutResult: ...

    async def get_exact(self, exact_key: str) -> CacheEntry | None:
        """The entry stored for this exact key, marked recently used."""
        ...

    async def get(self, entry_ids: Sequence[str]) -> list[CacheEntry | None]:
        """Entries by id (None where gone), without vectors and without marking them used."""
        ...

    async def touch(self, entry_id: str) -> None: ...

    async def changes(self, scope_key: str, cursor: str | None) -> Changes: ...

    async def update(self, entry_id: str, *, threshold: float, contradictions: int) -> None: ...

    async def delete(self, entry_id: str) -> bool: ...

    async def count(self) -> int: ...
