"""An in-process store: the embedded default (one gateway process, nothing shared, lost on restart)."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

from cache.entry import CacheEntry, Vector
from cache.stores.base import Changes, PutResult

__all__ = ["MemoryStore"]

# (sequence number, "add" | "del", entry id, vector, expires_at)
_Record = tuple[int, str, str, Vector | None, float]


class MemoryStore:
    kind = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()  # least recently used first
        self._exact: dict[str, str] = {}
        self._logs: dict[str, list[_Record]] = {}
        self._expiry: list[tuple[float, str]] = []  # heap of (expires_at, entry id)
        self._seq = 0
        self._puts = 0

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def put(self, entry: CacheEntry) -> PutResult:
        expired = self._sweep()
        old = self._exact.get(entry.exact_key)
        if old is not None:
            self._drop(old)
        self._entries[entry.id] = entry
        self._exact[entry.exact_key] = entry.id
        heapq.heappush(self._expiry, (entry.expires_at, entry.id))
        if entry.scope_key is not None and entry.vector is not None:
            self._log(entry.scope_key, "add", entry.id, entry.vector, entry.expires_at)
        evicted = 0
        while len(self._entries) > self.max_entries:
            victim = next(iter(self._entries))
            self._drop(victim)
            evicted += 1
        return PutResult(evicted=evicted, expired=expired, entries=len(self._entries))

    async def get_exact(self, exact_key: str) -> CacheEntry | None:
        entry_id = self._exact.get(exact_key)
        entry = self._live(entry_id) if entry_id else None
        if entry is not None:
            self._entries.move_to_end(entry.id)
        return entry

    async def get(self, entry_ids: Sequence[str]) -> list[CacheEntry | None]:
        out: list[CacheEntry | None] = []
        for entry_id in entry_ids:
            entry = self._live(entry_id)
            out.append(replace(entry, vector=None) if entry else None)
        return out

    async def touch(self, entry_id: str) -> None:
        if entry_id in self._entries:
            self._entries.move_to_end(entry_id)

    async def changes(self, scope_key: str, cursor: str | None) -> Changes:
        log = self._logs.get(scope_key)
        if log is None:
            return Changes(cursor=None, reset=cursor is not None)
        after = int(cursor) if cursor is not None else -1
        result = Changes(cursor=str(log[-1][0]))
        for seq, op, entry_id, vector, expires_at in log:
            if seq <= after:
                continue
            if op == "add" and vector is not None:
                result.added.append((entry_id, vector, expires_at))
            else:
                result.removed.append(entry_id)
        return result

    async def update(self, entry_id: str, *, threshold: float, contradictions: int) -> None:
        entry = self._entries.get(entry_id)
        if entry is not None:
            entry.threshold, entry.contradictions = threshold, contradictions

    async def delete(self, entry_id: str) -> bool:
        return self._drop(entry_id)

    async def count(self) -> int:
        self._sweep()
        return len(self._entries)

    # -- internals -------------------------------------------------------------------------

    def _live(self, entry_id: str) -> CacheEntry | None:
        entry = self._entries.get(entry_id)
        if entry is not None and entry.expires_at <= self._clock():
            self._drop(entry_id)
            return None
        return entry

    def _drop(self, entry_id: str, log: bool = True) -> bool:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return False
        if self._exact.get(entry.exact_key) == entry_id:
            del self._exact[entry.exact_key]
        # Expiry needs no record: every replica's index knows each vector's expiry already.
        if log and entry.scope_key is not None and entry.scope_key in self._logs:
            self._log(entry.scope_key, "del", entry_id, None, entry.expires_at)
        return True

    def _log(self, scope: str, op: str, entry_id: str, vector: Vector | None, expires_at: float) -> None:
        self._seq += 1
        self._logs.setdefault(scope, []).append((self._seq, op, entry_id, vector, expires_at))

    def _sweep(self) -> int:
        """Drop expired entries; now and then, log records that only concern expired entries."""
        now = self._clock()
        gone = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = heapq.heappop(self._expiry)
            entry = self._entries.get(entry_id)
            if entry is not None and entry.expires_at <= now:
                self._drop(entry_id, log=False)
                gone += 1
        self._puts += 1
        if self._puts % 1024 == 0:
            for scope in list(self._logs):
                log = [r for r in self._logs[scope] if r[4] > now]
                if log:
                    self._logs[scope] = log
                else:
                    del self._logs[scope]
        return gone
