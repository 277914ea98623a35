"""The cache with the real bundled embedder (all-MiniLM-L6-v2)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest

from cache import CacheSettings, MemoryStore, ResponseCache, SentenceEmbedder
from tests.cache.support import chat, completion, look

pytestmark = pytest.mark.model
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    model = SentenceEmbedder()
    model.load()
    return model


@pytest.fixture
async def cache(embedder: SentenceEmbedder) -> AsyncIterator[ResponseCache]:
    c = ResponseCache(CacheSettings(embed_timeout_s=2.0), MemoryStore(), embedder)
    await c.start()
    yield c
    await c.aclose()


async def test_concurrent_embeddings_are_coalesced(embedder: SentenceEmbedder) -> None:
    before = embedder.batches
    vectors = await asyncio.gather(*(embedder.embed([f"question number {i}"]) for i in range(16)))
    assert embedder.batches - before < 16
    assert all(abs(float(np.linalg.norm(v[0])) - 1.0) < 1e-4 for v in vectors)
    assert embedder.dim == 384


async def test_paraphrase_hits_and_traps_miss_with_the_real_model(cache: ResponseCache,
                                                                  embedder: SentenceEmbedder) -> None:
    async def embed(text: str) -> np.ndarray | None:
        return await embedder.embed_one(text, timeout=2.0)

    miss = await look(cache, "t1", chat("How do I cancel my subscription?"), embed)
    assert await cache.store(miss, completion("Settings > Billing > Cancel."))
    for text in ("how can i cancel my subscription", "Hi! How do I cancel my subscripion? Thanks"):
        hit = await look(cache, "t1", chat(text), embed)
        assert hit.status == "semantic", (text, hit.reason, hit.similarity)
    # A negation is caught by its guard however similar the texts are; a changed object ("gym")
    # may fall below the calibrated threshold before the content guard needs to act.
    trap = await look(cache, "t1", chat("Don't cancel my subscription"), embed)
    assert (trap.status, trap.reason) == ("miss", "guard:negation"), trap.similarity
    trap = await look(cache, "t1", chat("How do I cancel my gym subscription?"), embed)
    assert trap.status == "miss" and trap.reason in ("guard:content", "below_threshold"), trap
