"""The tool router's stage on Anthropic tool shapes: it scores chat-shaped views of the tools, and
what goes upstream are the request's own definitions, byte for byte; tool_use blocks in the answer
are its feedback."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.anthropic.dialect import MESSAGES
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.stages.tools import ToolStage
from router import Narrowing, RouterSettings


def _tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"{name} tool", "input_schema": {"type": "object"}, **extra}


class RecordingRouter:
    """Keeps the chat-shaped tools whose name holds `keep`; records what it was asked and told."""

    def __init__(self, keep: str):
        self.keep = keep
        self.asked: dict[str, Any] = {}
        self.observed: list[list[str]] = []

    async def narrow(
        self, tenant: str, tools: list[Any], messages: Any, tool_choice: Any, vector: Any, *, intent: str
    ) -> Narrowing:
        self.asked = {"tools": tools, "messages": messages, "tool_choice": tool_choice, "intent": intent}
        kept = [t for t in tools if self.keep in t["function"]["name"]]
        return Narrowing(
            tools=kept,
            tools_in=len(tools),
            tools_out=len(kept),
            confidence=0.9,
            band="high",
            fallback=False,
            narrowed=len(kept) < len(tools),
            shadow=False,
            catalogue="c",
            reason="narrowed",
        )

    def observe(self, tenant: str, narrowing: Narrowing, called: list[str]) -> None:
        self.observed.append(called)


@pytest.mark.asyncio
async def test_survivors_are_the_clients_anthropic_tools_byte_for_byte() -> None:
    tools = [_tool(f"tool_{i}") for i in range(20)] + [_tool("get_weather", cache_control={"type": "ephemeral"})]
    body = {
        "model": "m",
        "max_tokens": 10,
        "tools": tools,
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "tool_3", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                    {"type": "text", "text": "weather in Oslo?"},
                ],
            },
        ],
    }
    sent = orjson.dumps(body)
    ctx = RequestContext("r", "messages", body, {}, dialect=MESSAGES)
    router = RecordingRouter(keep="weather")
    await ToolStage(router, RouterSettings(threshold=4))(ctx)  # type: ignore[arg-type]
    assert router.asked["tools"][20] == {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}, "description": "get_weather tool"},
    }
    assert router.asked["tool_choice"] == "auto"
    assert router.asked["messages"][1]["tool_calls"][0]["function"]["name"] == "tool_3"  # earlier calls count
    assert router.asked["intent"] == "weather in Oslo?"
    assert ctx.upstream_body is not None
    assert ctx.upstream_body["tools"] == [tools[20]] and ctx.upstream_body["tools"][0] is tools[20]
    assert orjson.dumps(body) == sent  # the client's body is never changed
    assert ctx.response_headers["x-switchyard-tools"] == "21->1"

    answer = {
        "type": "message",
        "content": [
            {"type": "text", "text": "Checking"},
            {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {}},
        ],
    }
    for hook in ctx.on_complete:
        hook(Completion("messages", "m", "b", ok=True, response=answer))
    assert router.observed == [["get_weather"]]


@pytest.mark.asyncio
async def test_a_request_without_tools_is_not_scored() -> None:
    ctx = RequestContext("r", "messages", {"model": "m", "max_tokens": 1, "messages": []}, {}, dialect=MESSAGES)
    router = RecordingRouter(keep="x")
    assert await ToolStage(router, RouterSettings())(ctx) is None  # type: ignore[arg-type]
    assert router.asked == {}


def test_token_reservations_count_the_messages_system_prompt() -> None:
    from gateway.stages.admission import estimate_tokens

    ask = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    bare = estimate_tokens(ask, 256)
    assert estimate_tokens({**ask, "system": "x" * 100}, 256) == bare + 100
    assert estimate_tokens({**ask, "system": [{"type": "text", "text": "x" * 100}]}, 256) == bare + 100
