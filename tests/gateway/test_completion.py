from __future__ import annotations

import orjson

from gateway.completion import StreamAssembler, called_tools
from gateway.replay import replay_events
from gateway.stages.admission import estimate_tokens


def _chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_role_only_chunks_are_not_content() -> None:
    a = StreamAssembler("chat/completions", assemble=False)
    assert not a.feed(_chunk({"role": "assistant", "content": ""}))
    assert a.feed(_chunk({"content": "Hi"}))
    assert a.feed(_chunk({}, "stop"))
    assert not a.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    assert a.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert a.finish_reason == "stop"


def test_assembles_text_and_tool_calls() -> None:
    a = StreamAssembler("chat/completions", assemble=True)
    a.feed(_chunk({"role": "assistant", "content": "Let me "}))
    a.feed(_chunk({"content": "check."}))
    a.feed(
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        )
    )
    a.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}))
    a.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}))
    a.feed(_chunk({}, "tool_calls"))
    out = a.response("m")
    message = out["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert called_tools(out) == ["get_weather"]


def test_replay_round_trips_through_the_assembler() -> None:
    stored = {
        "id": "x",
        "created": 5,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "The quick brown fox jumps over the lazy dog.",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }
    events = replay_events(stored, include_usage=True)
    assert len(events) > 5  # a real stream, not one giant chunk
    a = StreamAssembler("chat/completions", assemble=True)
    for e in events:
        a.feed(orjson.loads(e[len(b"data: ") :]))
    rebuilt = a.response("m")
    assert rebuilt["choices"][0]["message"] == stored["choices"][0]["message"]  # type: ignore[index]
    assert rebuilt["usage"] == stored["usage"]
    assert not any(b'"usage"' in e for e in replay_events(stored, include_usage=False))


def test_token_estimate() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate_tokens(body, 256) == 400 + 4 + 50  # one token per byte: never under the real count
    assert estimate_tokens(body, 256, upper_bound=False) == 100 + 4 + 50
    assert estimate_tokens({"messages": [{"role": "user", "content": "hé"}]}, 256) == 3 + 4 + 256
    assert estimate_tokens({"input": "x" * 40}, 256) == 41
    with_tools = {**body, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert estimate_tokens(with_tools, 256) > estimate_tokens(body, 256)
