"""Prefix affinity: which replica most likely holds a prompt's prefix in its KV cache.

The prompt is rendered canonically (tools, then one line per message: role, content, tool calls),
so a conversation's next turn renders to the previous turn's text plus more. The text is cut into
fixed-size chunks of characters (characters, not tokens: the gateway has no tokenizer for every
engine, and a fixed character grid is stable wherever it is cut) and hashed as a chain, each link
covering everything before it. The map remembers, per link, the replica that last served a prompt
with it; the longest link found names the replica.

With Redis configured the map lives there (entries expire after `prefix_ttl`), so every gateway
replica sends a conversation to the same engine replica; when Redis fails the in-memory copy that
every gateway keeps answers instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from gateway import metrics
from gateway.types import JSON

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["PrefixMap", "prefix_chain", "render_prompt"]

log = logging.getLogger(__name__)

# Longer prompts are told apart by their first this-many chunks only: one Redis round trip of
# bounded size per request.
MAX_CHUNKS = 256


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()


def render_prompt(body: JSON) -> str:
    """The prompt a request sends, rendered so that appending turns only appends text."""
    if "messages" in body:
        parts = [_text(body["tools"]) + "\n"] if body.get("tools") else []
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            extra = {k: message[k] for k in ("name", "tool_calls", "tool_call_id") if message.get(k)}
            line = [str(message.get("role", "")), _text(message.get("content"))]
            if extra:
                line.append(_text(extra))
            parts.append(orjson.dumps(line).decode() + "\n")
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else _text(prompt)


def prefix_chain(text: str, chunk_chars: int, seed: str) -> list[str]:
    """Hex digests of the chain over the full chunks of `text`: link i covers chunks 0..i."""
    chain: list[str] = []
    digest = hashlib.blake2b(seed.encode(), digest_size=16).digest()
    for start in range(0, min(len(text), MAX_CHUNKS * chunk_chars) - chunk_chars + 1, chunk_chars):
        digest = hashlib.blake2b(digest + text[start : start + chunk_chars].encode(), digest_size=16).digest()
        chain.append(digest.hex())
    return chain


class PrefixMap:
    """Chain link → replica name, in memory (bounded, expiring) and in Redis when there is one."""

    def __init__(self, *, ttl: float, entries: int, redis: Redis | None = None, key_prefix: str = "prefix:"):
        self._ttl = ttl
        self._entries = entries
        self._redis = redis
        self._prefix = key_prefix
        self._local: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._writes: set[asyncio.Task[None]] = set()

    async def owner(self, chain: list[str]) -> tuple[str, int] | None:
        """The replica that served the longest known link of `chain`, and that link's length."""
        if not chain:
            return None
        if self._redis is not None:
            try:
                found = await self._redis.mget([self._prefix + link for link in chain])
            except Exception as exc:
                metrics.labelled(metrics.STORE_ERRORS, "prefix").inc()
                log.debug("prefix map lookup in Redis failed: %s", exc)
            else:
                for depth in range(len(found), 0, -1):
                    name = found[depth - 1]
                    if name is not None:
                        return (name.decode() if isinstance(name, bytes) else str(name)), depth
                return None
        now = time.monotonic()
        for depth in range(len(chain), 0, -1):
            entry = self._local.get(chain[depth - 1])
            if entry is not None and entry[1] > now:
                return entry[0], depth
        return None

    def record(self, chain: list[str], name: str) -> None:
        """`name` served a prompt with this chain: it holds every link now."""
        if not chain:
            return
        expires = time.monotonic() + self._ttl
        for link in chain:
            self._local[link] = (name, expires)
            self._local.move_to_end(link)
        while len(self._local) > self._entries:
            self._local.popitem(last=False)
        if self._redis is not None:
            task = asyncio.create_task(self._store(chain, name))  # off the request's path
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _store(self, chain: list[str], name: str) -> None:
        assert self._redis is not None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for link in chain:
                    pipe.set(self._prefix + link, name, ex=int(self._ttl))
                await pipe.execute()
        except Exception as exc:
            metrics.labelled(metrics.STORE_ERRORS, "prefix").inc()
            log.debug("prefix map write to Redis failed: %s", exc)

    async def aclose(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)
