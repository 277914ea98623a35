"""Nearest-neighbour search over one scope partition, and the set of partitions a replica holds.

A partition starts as an exact flat inner-product index (vectors are normalised, so the inner
product is the cosine) and moves to HNSW when it grows past `hnsw_min`. Flat indexes delete in
place; HNSW cannot, so deleted ids become tombstones that searches skip until a rebuild.
Every vector carries its entry's absolute expiry, so an expired entry is never a candidate even
when no deletion reached this replica.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import faiss
import numpy as np

from cache.entry import Vector

__all__ = ["IndexSet", "Partition", "PartitionIndex"]

_HNSW_NEIGHBOURS = 32

# One query against one partition is microseconds of work: faiss's OpenMP team only adds hand-offs,
# and on a busy host its spinning threads made a 300-vector search take 17 ms instead of 0.1.
faiss.omp_set_num_threads(1)
_REBUILD_DEAD_SHARE = 0.25


class PartitionIndex:
    def __init__(self, dim: int, hnsw_min: int = 4096):
        self.dim = dim
        self.hnsw_min = hnsw_min
        self._ids: dict[str, int] = {}  # entry id -> faiss id
        self._names: dict[int, str] = {}  # live faiss ids; their vectors live only in the index
        self._expires: dict[int, float] = {}
        self._dead: set[int] = set()
        self._next = 0
        self._index: faiss.Index = self._flat()
        self._hnsw = False

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._ids

    @property
    def kind(self) -> str:
        return "hnsw" if self._hnsw else "flat"

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def add(self, entry_id: str, vector: Vector, expires_at: float) -> None:
        if entry_id in self._ids:
            return
        fid = self._next
        self._next += 1
        row = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        self._ids[entry_id] = fid
        self._names[fid] = entry_id
        self._expires[fid] = expires_at
        self._index.add_with_ids(row, np.array([fid], dtype=np.int64))
        if not self._hnsw and len(self._ids) >= self.hnsw_min:
            self._rebuild(hnsw=True)

    def remove(self, entry_id: str) -> None:
        fid = self._ids.pop(entry_id, None)
        if fid is None:
            return
        del self._names[fid], self._expires[fid]
        if self._hnsw:
            self._dead.add(fid)
            if len(self._dead) > _REBUILD_DEAD_SHARE * max(len(self._ids), 1):
                self._rebuild(hnsw=len(self._ids) >= self.hnsw_min // 2)
        else:
            # faiss's Python wrapper turns an id array into a selector; its stubs do not say so
            self._index.remove_ids(np.array([fid], dtype=np.int64))  # type: ignore[arg-type]

    def expire(self, now: float) -> int:
        gone = [self._names[fid] for fid, exp in self._expires.items() if exp <= now]
        for entry_id in gone:
            self.remove(entry_id)
        return len(gone)

    def search(self, vector: Vector, k: int, floor: float = -1.0, now: float | None = None
               ) -> list[tuple[str, float]]:
        """Up to k (entry id, cosine) at or above `floor`, best first; expired entries skipped."""
        if not self._ids:
            return []
        now = time.time() if now is None else now
        want = min(k + len(self._dead), self._index.ntotal)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        sims, fids = self._index.search(query, want)
        out: list[tuple[str, float]] = []
        for sim, fid in zip(sims[0], fids[0], strict=True):
            fid = int(fid)
            if fid < 0 or fid in self._dead or fid not in self._names or sim < floor:
                continue
            if self._expires[fid] <= now:
                continue
            out.append((self._names[fid], float(sim)))
            if len(out) == k:
                break
        return out

    def _rebuild(self, hnsw: bool) -> None:
        if hnsw:
            base = faiss.IndexHNSWFlat(self.dim, _HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = 64
            index: faiss.Index = faiss.IndexIDMap2(base)
        else:
            index = self._flat()
        if self._names:
            # both index kinds reconstruct by id, so the vectors are not kept a second time in Python
            fids = np.fromiter(self._names.keys(), dtype=np.int64)
            index.add_with_ids(np.stack([self._index.reconstruct(int(fid)) for fid in fids]), fids)
        self._index, self._hnsw, self._dead = index, hnsw, set()


@dataclass
class Partition:
    """One partition as this replica knows it: its index and how far it has read the store's log."""

    index: PartitionIndex
    cursor: str | None = None
    synced_at: float = field(default=float("-inf"))


class IndexSet:
    """The partitions a replica holds, least recently used dropped first (they reload from the store)."""

    def __init__(self, dim: int, max_partitions: int, hnsw_min: int):
        self.dim = dim
        self.max_partitions = max_partitions
        self.hnsw_min = hnsw_min
        self._parts: OrderedDict[str, Partition] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parts)

    def get(self, scope: str) -> Partition:
        part = self._parts.get(scope)
        if part is None:
            part = Partition(PartitionIndex(self.dim, self.hnsw_min))
            self._parts[scope] = part
            while len(self._parts) > self.max_partitions:
                self._parts.popitem(last=False)
        else:
            self._parts.move_to_end(scope)
        return part

    def reset(self, scope: str | None = None) -> None:
        if scope is None:
            self._parts.clear()
        else:
            self._parts.pop(scope, None)

    def vectors(self) -> int:
        return sum(len(p.index) for p in self._parts.values())
