"""The one intent text the cache and the router share (`gateway.intent`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest

from cache import CacheSettings, MemoryStore, ResponseCache
from gateway.context import RequestContext
from gateway.intent import intent_text
from gateway.relay import Relay
from gateway.stages.cache import CacheStage
from gateway.stages.tools import ToolStage
from router import RouterSettings, ToolRouter
from tests.cache.support import bow_vector

CALL = {"id": "1", "type": "function", "function": {"name": "w", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([{"role": "user", "content": "hello"}], "hello"),
        (
            [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": " second \n"},
            ],
            "second",
        ),
        # text parts joined by newlines, other parts left out
        (
            [{"role": "user", "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "this"},
            ]}],
            "look at\nthis",
        ),
        # mid tool-loop: the intent is still the last thing the user asked
        (
            [
                {"role": "user", "content": "weather in Oslo"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "1", "content": "rain"},
            ],
            "weather in Oslo",
        ),
        # a latest user turn without text: the one before it says what is wanted
        (
            [{"role": "user", "content": "what is in this picture"},
             {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "what is in this picture",
        ),
        ([{"role": "user", "content": "  "}, {"role": "system", "content": "x"}], ""),
        ([{"role": "system", "content": "s"}], ""),
        ([], ""),
        (None, ""),
        ("not a list", ""),
    ],
)
def test_intent_text(messages: Any, text: str) -> None:
    assert intent_text(messages) == text


def test_no_length_cut() -> None:
    long = "word " * 2000
    assert intent_text([{"role": "user", "content": long}]) == long.strip()


class _Words:
    """An `Embedder` for the router's tools: each word adds a fixed pseudo-random direction."""

    dim = 64

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return np.stack([bow_vector(t) for t in texts])


async def test_one_request_through_cache_and_router_embeds_its_intent_once() -> None:
    cache = ResponseCache(CacheSettings(), MemoryStore(), None, vocabulary={})
    await cache.start()
    words = _Words()
    settings = RouterSettings(shadow_fraction=0.0, feedback=False, inline_embed_max=1000)
    router = ToolRouter(settings, words)
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": f"does thing number {i}"}}
             for i in range(settings.threshold + 4)]
    messages = [{"role": "system", "content": "You help."},
                {"role": "user", "content": [{"type": "text", "text": "  do thing"}, {"type": "text", "text": "7 "}]}]
    ctx = RequestContext(request_id="r1", endpoint="chat/completions", headers={},
                         body={"model": "m", "temperature": 0, "messages": messages, "tools": tools})
    asked: list[str] = []

    async def embed(text: str) -> np.ndarray | None:  # what the pipeline's memoised embed is handed
        asked.append(text)
        return bow_vector(text)

    ctx.embed = embed
    relay = cast(Relay, None)  # the cache stage calls the relay only to verify a hit; this is a miss
    assert await CacheStage(cache, relay)(ctx) is None
    assert await ToolStage(router, settings)(ctx) is None
    assert ctx.response_headers["x-switchyard-cache"] == "miss"
    assert ctx.response_headers["x-switchyard-tools"] != f"{len(tools)}->{len(tools)}"  # it narrowed
    assert set(asked) == {"do thing\n7"}  # the cache and the router asked for one text
    assert not any("do thing" in t for t in words.texts)  # the router did not embed it again itself
    await cache.aclose()
