"""Helpers shared by the cache tests: a deterministic bag-of-words embedding and request builders."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cache import CacheLookup, ResponseCache
from gateway.intent import intent_text

DIM = 64


def bow_vector(text: str) -> np.ndarray:
    """A deterministic stand-in for a sentence embedding: the normalised sum of one fixed random
    vector per word, so prompts that share words are close. Fast, and needs no model."""
    total = np.zeros(DIM, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        rng = np.random.default_rng(zlib.crc32(word.encode()))
        total += rng.standard_normal(DIM).astype(np.float32)
    norm = float(np.linalg.norm(total))
    return total / norm if norm else total


class Embed:
    """An embed function for `ResponseCache.lookup` that counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, text: str) -> np.ndarray | None:
        self.calls.append(text)
        return bow_vector(text)


async def look(cache: ResponseCache, tenant: str, request: dict[str, Any], embed: Any = None,
               **options: bool) -> CacheLookup:
    """`cache.lookup` with the intent text computed as the gateway computes it."""
    return await cache.lookup(tenant, request, embed, intent=intent_text(request.get("messages")), **options)


def chat(text: str, *, model: str = "m1", system: str | None = "You are helpful.", **params: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return {"model": model, "messages": messages, "temperature": 0, **params}


def completion(text: str = "An answer.", *, finish: str = "stop", completion_tokens: int = 5,
               tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": completion_tokens, "total_tokens": 10 + completion_tokens},
    }


class BowEmbedder:
    """The `Embedder` shape over `bow_vector`, for caches that embed on their own (no_cache stores)."""

    dim = DIM

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([bow_vector(t) for t in texts]) if texts else np.zeros((0, DIM), dtype=np.float32)
