"""Byte-level wire format: every rendered event is valid JSON of the OpenAI shape."""

from __future__ import annotations

import json
from typing import Any

from sim import wire


def event(raw: bytes) -> dict[str, Any]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return dict(json.loads(raw[6:]))


def test_chat_stream_events() -> None:
    cs = wire.ChatStream("c1", 10, "m", include_usage=True)
    role, content = event(cs.role()), event(cs.content('he said "hi"\n'))
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert content["choices"][0]["delta"] == {"content": 'he said "hi"\n'}
    assert content["usage"] is None and content["object"] == "chat.completion.chunk"
    finish = event(cs.finish("length"))
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    usage = event(cs.usage(3, 4))
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
    }


def test_chat_stream_without_usage_has_no_usage_key() -> None:
    cs = wire.ChatStream("c1", 10, "m", include_usage=False)
    assert "usage" not in event(cs.content("x")) and "usage" not in event(cs.finish("stop"))


def test_tool_call_events() -> None:
    cs = wire.ChatStream("c1", 10, "m", include_usage=False)
    head = event(cs.tool_head("call_1", "f"))["choices"][0]["delta"]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    frag = event(cs.tool_arguments('{"a'))["choices"][0]["delta"]["tool_calls"][0]
    assert frag == {"index": 0, "function": {"arguments": '{"a'}}


def test_completion_stream_events() -> None:
    cs = wire.CompletionStream("x", 1, "m", include_usage=False)
    assert event(cs.content("a"))["choices"][0]["text"] == "a"
    assert event(cs.finish("stop"))["choices"][0]["finish_reason"] == "stop"


def test_error_body_shape() -> None:
    assert json.loads(wire.error_body("m", "t", "c")) == {
        "error": {"message": "m", "type": "t", "param": None, "code": "c"}
    }
