"""Tool vectors, cached by a hash of the tool's definition so each distinct tool is embedded once.

Each tool has two rows: its full text and its description (see `router.tooltext`). They live in a
bounded in-process LRU and, when Redis is configured, in one Redis hash that every replica shares.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from router.embedder import Embedder, Vectors
from router.tooltext import dense_text, description_text

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["ToolVectors"]

log = logging.getLogger(__name__)


class ToolVectors:
    def __init__(
        self, embedder: Embedder, redis: Redis | None = None, key: str = "switchyard:router:vec", capacity: int = 50_000
    ):
        self._embedder = embedder
        self._redis = redis
        self._key = key
        self._capacity = capacity
        self._memory: OrderedDict[str, Vectors] = OrderedDict()
        self.embedded = 0  # tools this process embedded itself (tests check that sharing works)

    def cached(self, hashes: Iterable[str]) -> dict[str, Vectors]:
        found = {}
        for h in hashes:
            rows = self._memory.get(h)
            if rows is not None:
                self._memory.move_to_end(h)
                found[h] = rows
        return found

    async def fetch(self, hashes: Iterable[str]) -> dict[str, Vectors]:
        """Vectors already known here or in Redis; never embeds."""
        wanted = list(dict.fromkeys(hashes))
        found = self.cached(wanted)
        missing = [h for h in wanted if h not in found]
        if missing and self._redis is not None:
            try:
                blobs = await self._redis.hmget(self._key, missing)
            except Exception as exc:  # Redis down: embed locally rather than fail the request
                log.warning("tool vectors from redis failed: %r", exc)
                blobs = [None] * len(missing)
            for h, blob in zip(missing, blobs, strict=True):
                rows = self._decode(blob)
                if rows is not None:
                    found[h] = self._remember(h, rows)
        return found

    async def ensure(self, tools: Mapping[str, Mapping[str, Any]]) -> dict[str, Vectors]:
        """Vectors for every tool (hash -> definition), embedding those nobody has embedded yet."""
        found = await self.fetch(tools)
        missing = [h for h in tools if h not in found]
        if not missing:
            return found
        texts = [dense_text(tools[h]) for h in missing] + [description_text(tools[h]) for h in missing]
        vectors = await self._embedder.embed(texts)
        n = len(missing)
        fresh = {h: self._remember(h, np.stack([vectors[i], vectors[n + i]])) for i, h in enumerate(missing)}
        self.embedded += n
        if self._redis is not None:
            try:
                await self._redis.hset(self._key, mapping={h: rows.tobytes() for h, rows in fresh.items()})
            except Exception as exc:
                log.warning("storing tool vectors in redis failed: %r", exc)
        found.update(fresh)
        return found

    def _remember(self, h: str, rows: Vectors) -> Vectors:
        self._memory[h] = rows
        self._memory.move_to_end(h)
        while len(self._memory) > self._capacity:
            self._memory.popitem(last=False)
        return rows

    def _decode(self, blob: Any) -> Vectors | None:
        if not isinstance(blob, bytes | bytearray):
            return None
        rows = np.frombuffer(bytes(blob), dtype=np.float32)
        dim = self._embedder.dim
        if dim <= 0 or rows.size != 2 * dim:
            return None  # another embedder's vectors: ignore them, embed again
        return rows.reshape(2, dim)
