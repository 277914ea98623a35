"""Property-based tests of tool narrowing: whatever the tool list (sizes up to thousands, odd names,
duplicates, tools without a usable name), the router never drops a forced, pinned or already
called tool, and what it sends upstream is the request's own dicts, untouched, in their order.

The embedder is a small deterministic one (hashed words): the properties are about the router's
bookkeeping, not the quality of its scores, which tests/router/ measures with the real model.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.intent import intent_text
from router import RouterSettings, ToolRouter
from router.narrow import KeepPolicy, decide

DIM = 32


class HashedWords:
    """An `Embedder`: each word adds a fixed pseudo-random direction; rows are L2-normalised."""

    dim = DIM

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or ["_"]:
                seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                rows[i] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
            rows[i] /= np.linalg.norm(rows[i]) or 1.0
        return rows


WORDS = ["weather", "flight", "hotel", "email", "send", "book", "search", "stock", "price", "cancel", "create"]
names = st.from_regex(r"[A-Za-z0-9_.\-]{1,24}", fullmatch=True)


@st.composite
def tool(draw: st.DrawFn) -> dict[str, Any]:
    function: dict[str, Any] = {"name": draw(names)}
    if draw(st.booleans()):
        function["description"] = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=8)))
    if draw(st.booleans()):
        function["parameters"] = {
            "type": "object",
            "properties": {w: {"type": "string"} for w in draw(st.lists(st.sampled_from(WORDS), max_size=3))},
        }
    return {"type": "function", "function": function}


@st.composite
def requests(draw: st.DrawFn, max_tools: int = 60) -> dict[str, Any]:
    tools = draw(st.lists(tool(), min_size=17, max_size=max_tools))  # over the threshold of 16
    tool_names = [t["function"]["name"] for t in tools]
    forced = draw(st.none() | st.sampled_from(tool_names))
    called = draw(st.lists(st.sampled_from(tool_names), max_size=3))
    messages: list[dict[str, Any]] = [{"role": "user", "content": " ".join(draw(st.lists(st.sampled_from(WORDS))))}]
    if called:
        calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
            for i, n in enumerate(called)
        ]
        messages += [
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c0", "content": "ok"},
            {"role": "user", "content": " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1)))},
        ]
    choice = {"type": "function", "function": {"name": forced}} if forced else draw(st.sampled_from([None, "auto"]))
    pinned = draw(st.lists(st.sampled_from(tool_names), max_size=2))
    return {"tools": tools, "messages": messages, "tool_choice": choice, "pinned": pinned, "called": called}


async def _narrow(request: dict[str, Any], **overrides: Any) -> tuple[list[dict[str, Any]], Any]:
    settings_ = RouterSettings(
        pinned=tuple(request["pinned"]), shadow_fraction=0.0, inline_embed_max=100_000, feedback=False, **overrides
    )
    router = ToolRouter(settings_, HashedWords())
    tools = request["tools"]
    before = copy.deepcopy(tools)
    narrowing = await router.narrow(
        "t", tools, request["messages"], request["tool_choice"], intent=intent_text(request["messages"])
    )
    assert tools == before  # the request's list and dicts were not modified
    return before, narrowing


def _check(request: dict[str, Any], before: list[dict[str, Any]], narrowing: Any) -> None:
    tools = request["tools"]
    sent = narrowing.tools
    # The very same objects, each at most once, in the request's order.
    positions = [next(i for i, t in enumerate(tools) if t is s) for s in sent]
    assert positions == sorted(set(positions))
    assert narrowing.tools_in == len(tools) and narrowing.tools_out == len(sent)
    assert narrowing.header == f"{len(tools)}->{len(sent)}"
    sent_names = {t["function"]["name"] for t in sent}
    must = set(request["pinned"]) | set(request["called"])
    if isinstance(request["tool_choice"], dict):
        must.add(request["tool_choice"]["function"]["name"])
    assert must <= sent_names, (must - sent_names, narrowing.reason)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(request=requests())
async def test_forced_pinned_and_called_tools_always_survive(request: dict[str, Any]) -> None:
    before, narrowing = await _narrow(request)
    _check(request, before, narrowing)


@FUZZ
@given(request=requests())
async def test_they_survive_a_policy_that_keeps_only_one(request: dict[str, Any]) -> None:
    before, narrowing = await _narrow(request, min_keep=1, max_keep=1, widen_below=0.0, fallback_below=0.0)
    _check(request, before, narrowing)
    assert narrowing.narrowed or len(narrowing.tools) == len(request["tools"])


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests(max_tools=300))
async def test_thousands_of_tools(request: dict[str, Any]) -> None:
    # Repeated definitions (distinct objects, same names) up to 3000 tools.
    repeated = [copy.deepcopy(request["tools"][i % len(request["tools"])]) for i in range(3000)]
    many = {**request, "tools": repeated}
    before, narrowing = await _narrow(many)
    _check(many, before, narrowing)


@settings(max_examples=500, deadline=None)
@given(
    scores=st.lists(st.floats(min_value=-5, max_value=5, allow_nan=False), max_size=200),
    must=st.lists(st.integers(min_value=-3, max_value=210), max_size=10),
    min_keep=st.integers(1, 20),
    extra=st.integers(0, 30),
)
def test_decide_keeps_every_must_keep_and_nothing_twice(
    scores: list[float], must: list[int], min_keep: int, extra: int
) -> None:
    policy = KeepPolicy(min_keep=min_keep, max_keep=min_keep + extra)
    decision = decide(np.array(scores, dtype=np.float64), must, policy)
    n = len(scores)
    assert list(decision.keep) == sorted(set(decision.keep))
    assert all(0 <= i < n for i in decision.keep)
    assert {i for i in must if 0 <= i < n} <= set(decision.keep)
    if decision.fallback:
        assert decision.keep == tuple(range(n))
    else:
        assert decision.k <= policy.max_keep or decision.band == "low"
