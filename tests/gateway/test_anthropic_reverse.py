"""Chat clients in front of Messages backends: `to_messages`, table-wise against the recordings of
`fixtures/anthropic` (vLLM's Messages answers must come back as vLLM's chat answers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.anthropic.to_chat import chat_request
from gateway.anthropic.to_messages import DEFAULT_MAX_TOKENS, ChatChunks, chat_response, messages_request
from gateway.completion import StreamAssembler
from gateway.errors import BadRequest, UpstreamError
from gateway.upstreams.sse import SSEDecoder
from tests.gateway.test_anthropic_translation import REQUESTS

VLLM = json.loads((Path(__file__).parent / "fixtures" / "anthropic" / "vllm.json").read_text())


def _data(stream: str) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [orjson.loads(p) for p in [*decoder.feed(stream.encode()), *decoder.flush()] if p != b"[DONE]"]


ROUND_TRIPS = [r for r in REQUESTS if r[0] not in ("a tool round trip", "system blocks with a cache hint")]


@pytest.mark.parametrize(("name", "request_body", "_expected"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_chat_requests_come_back_as_the_messages_request(
    name: str, request_body: dict[str, Any], _expected: Any
) -> None:
    """Messages → chat → Messages is the identity on what both APIs can say (strings as blocks)."""
    back = messages_request(chat_request(request_body))
    for message in back["messages"]:
        if [b["type"] for b in message["content"]] == ["text"]:
            message["content"] = message["content"][0]["text"]
    if isinstance(back.get("system"), list) and len(back["system"]) == 1:
        back["system"] = back["system"][0]["text"]
    assert back == request_body


def test_tool_turns_become_tool_use_and_tool_result_blocks() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Oslo"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "12 C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": "END",
    }
    out = messages_request(body)
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS
    assert out["system"] == [{"type": "text", "text": "Be brief."}]
    assert out["stop_sequences"] == ["END"]
    assert out["tools"] == [{"name": "w", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Oslo"}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "12 C"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 1}, "seed"),
        ({"temperature": 1.5}, "temperature"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ],
)
def test_what_messages_cannot_express_is_a_400_naming_it(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        messages_request({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    assert caught.value.param == param


@pytest.mark.parametrize("case", sorted(VLLM))
def test_messages_answer_becomes_vllms_chat_answer(case: str) -> None:
    recorded = VLLM[case]
    ours = chat_response(recorded["messages"])
    theirs = recorded["chat"]
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
    assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert ours["usage"][key] == theirs["usage"][key]


@pytest.mark.parametrize("case", sorted(VLLM))
def test_messages_stream_becomes_vllms_chat_stream(case: str) -> None:
    recorded = VLLM[case]
    chunks = ChatChunks("smollm2-135m-instruct")
    ours = [c for event in _data(recorded["messages_stream"]) for c in chunks.feed(event)]
    assert chunks.done
    theirs = _data(recorded["chat_stream"])
    rebuilt = StreamAssembler("chat/completions", assemble=True)
    expected = StreamAssembler("chat/completions", assemble=True)
    for c in ours:
        rebuilt.feed(c)
    for c in theirs:
        expected.feed(c)
    a, b = rebuilt.response("m"), expected.response("m")
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    assert a["choices"][0]["finish_reason"] == b["choices"][0]["finish_reason"]
    assert {k: a["usage"][k] for k in ("prompt_tokens", "completion_tokens")} == {
        k: b["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    }
    assert ours[-1]["choices"] == []  # usage arrives in a chunk of its own, as OpenAI sends it


def test_tool_use_events_become_tool_call_deltas() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty": 1}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    chunks = ChatChunks()
    assembler = StreamAssembler("chat/completions", assemble=True)
    for event in events:
        for c in chunks.feed(event):
            assembler.feed(c)
    out = assembler.response("m")
    message = out["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert message["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": '{"city": 1}'}}
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert out["id"] == "chatcmpl-1"


def test_an_error_event_raises() -> None:
    with pytest.raises(UpstreamError, match="overloaded"):
        ChatChunks().feed({"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}})
