"""Messages ⇄ chat completions translation, table-wise against recorded answers.

`fixtures/anthropic/vllm.json` holds vLLM's answers to the same requests over /v1/messages (its
own translation) and over /v1/chat/completions (the request as `chat_request` translates it),
plain and streamed; `sim_tools.json` a tool call from `switchyard sim`. Translating the chat
answers must give what a Messages server gives, and parse with the anthropic SDK's own types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from pydantic import TypeAdapter

from gateway.anthropic.errors import error_body, error_event
from gateway.anthropic.to_chat import MessagesStream, chat_request, message_response
from gateway.anthropic.wire import event
from gateway.errors import BadRequest, NoBackendAvailable, RateLimited, SwitchyardError, UpstreamTimeout
from gateway.upstreams.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
VLLM = json.loads((FIXTURES / "vllm.json").read_text())
SIM_TOOLS = json.loads((FIXTURES / "sim_tools.json").read_text())
EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _base(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}


# -- requests ------------------------------------------------------------------------------------

REQUESTS = [
    ("plain string", _base(), {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    (
        "system string, sampling, stop",
        _base(system="Be brief.", temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["\n\n", "END"]),
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "stop": ["\n\n", "END"],
        },
    ),
    (
        "system blocks with a cache hint",
        _base(
            system=[
                {"type": "text", "text": "A"},
                {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}},
            ]
        ),
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
                {"role": "user", "content": "hi"},
            ],
        },
    ),
    (
        "streamed, with a user id",
        _base(stream=True, metadata={"user_id": "u-1"}),
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u-1",
        },
    ),
    (
        "a tool round trip",
        {
            "model": "m",
            "max_tokens": 10,
            "tools": [WEATHER],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "...", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "timeout"}],
                        }
                    ],
                },
            ],
        },
        {
            "model": "m",
            "max_tokens": 10,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parameters": WEATHER["input_schema"],
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
            ],
        },
    ),
    (
        "an image",
        _base(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ]
        ),
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        },
    ),
    ("tool_choice any", _base(tools=[WEATHER], tool_choice={"type": "any"}), None),
    ("tool_choice none", _base(tools=[WEATHER], tool_choice={"type": "none"}), None),
]


@pytest.mark.parametrize(("name", "request_body", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_translation(name: str, request_body: dict[str, Any], expected: dict[str, Any] | None) -> None:
    out = chat_request(request_body)
    if expected is not None:
        assert out == expected
    if name == "tool_choice any":
        assert out["tool_choice"] == "required"
    if name == "tool_choice none":
        assert out["tool_choice"] == "none"


REFUSED = [
    (_base(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking"),
    (_base(container="c-1"), "container"),
    (_base(metadata={"user_id": "u", "team": "x"}), "metadata.team"),
    (_base(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
    (_base(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (
        _base(messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]}]),
        "messages[0].content[0].type",
    ),
    (
        _base(messages=[{"role": "user", "content": [{"type": "text", "text": "x", "citations": [{"a": 1}]}]}]),
        "messages[0].content[0].citations",
    ),
    (_base(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (_base(service_tier="priority"), "service_tier"),
]


@pytest.mark.parametrize(("request_body", "param"), REFUSED, ids=[r[1] for r in REFUSED])
def test_what_chat_cannot_express_is_a_400_naming_it(request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_request(request_body)
    assert caught.value.status == 400
    assert caught.value.param == param


# -- answers -------------------------------------------------------------------------------------


def _data(stream: str) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    payloads = [*decoder.feed(stream.encode()), *decoder.flush()]
    return [orjson.loads(p) for p in payloads if p != b"[DONE]"]


def _translate_stream(chat_stream: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Feed the chat chunks through `MessagesStream`; return the events, checked against their names."""
    writer = MessagesStream(request)
    return _framed(writer, _data(chat_stream))


def _framed(writer: MessagesStream, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writer's events as the SSE a client receives, read back."""
    out = [e for chunk in chunks for e in writer.feed(chunk)] + writer.close()
    return _events(b"".join(event(e) for e in out))


def _events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert name_line == f"event: {payload['type']}"
        if payload["type"] != "ping":  # not among the SDK's event types: it skips pings by name
            EVENT.validate_python(payload)
        events.append(payload)
    return events


def _accumulate(events: list[dict[str, Any]]) -> anthropic.types.Message:
    """What the anthropic SDK's stream helper makes of the events, served to it over (mock) HTTP."""
    raw = b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    client = anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=http)
    with client.messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("case", sorted(VLLM))
def test_plain_answer_matches_vllms_messages_answer(case: str) -> None:
    recorded = VLLM[case]
    ours = message_response(recorded["chat"], recorded["request"])
    theirs = recorded["messages"]
    anthropic.types.Message.model_validate(ours)
    for key in ("type", "role", "model", "content", "stop_reason", "usage"):
        assert ours[key] == theirs[key], key
    assert ours.get("stop_sequence") == theirs.get("stop_sequence")
    assert ours["id"].startswith("msg_")


@pytest.mark.parametrize("case", sorted(VLLM))
def test_streamed_answer_matches_vllms_messages_stream(case: str) -> None:
    recorded = VLLM[case]
    ours = _translate_stream(recorded["chat_stream"], recorded["request"])
    theirs = _data(recorded["messages_stream"])
    assert [e["type"] for e in ours if e["type"] != "ping"] == [e["type"] for e in theirs]
    assert ours[1] == {"type": "ping"}  # right after message_start, as Anthropic sends it

    def texts(events: list[dict[str, Any]]) -> list[str]:
        return [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]

    assert texts(ours) == texts(theirs)
    assert ours[-2] == theirs[-2]  # message_delta: stop reason, stop sequence and usage
    message = _accumulate(ours)
    plain = message_response(recorded["chat"], recorded["request"])
    assert message.content[0].text == plain["content"][0]["text"]  # type: ignore[union-attr]
    assert message.usage.input_tokens == plain["usage"]["input_tokens"]
    assert message.stop_reason == plain["stop_reason"]


def test_tool_call_answer_becomes_a_tool_use_block() -> None:
    recorded = SIM_TOOLS["tool_use"]
    call = recorded["chat"]["choices"][0]["message"]["tool_calls"][0]
    ours = message_response(recorded["chat"], recorded["request"])
    anthropic.types.Message.model_validate(ours)
    assert ours["content"] == [
        {
            "type": "tool_use",
            "id": call["id"],
            "name": "get_weather",
            "input": json.loads(call["function"]["arguments"]),
        }
    ]
    assert ours["stop_reason"] == "tool_use"
    assert ours["usage"] == {"input_tokens": 9, "output_tokens": 8}


def test_streamed_tool_call_becomes_input_json_deltas() -> None:
    recorded = SIM_TOOLS["tool_use"]
    events = _translate_stream(recorded["chat_stream"], recorded["request"])
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[2]["content_block"]
    assert (start["type"], start["name"], start["input"]) == ("tool_use", "get_weather", {})
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert len(deltas) > 1  # streamed in fragments, as they came
    message = _accumulate(events)
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.input == {"city": "weather oslo"}
    assert message.stop_reason == "tool_use"


def test_text_then_two_tool_calls_are_three_blocks() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-abc", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def call(index: int, **fn: str) -> dict[str, Any]:
        head = {"id": f"call_{index}", "type": "function"} if "name" in fn else {}
        return {"tool_calls": [{"index": index, **head, "function": fn}]}

    writer = MessagesStream({"model": "m"})
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me look."}),
        chunk(call(0, name="a", arguments="")),
        chunk(call(0, arguments='{"x": 1}')),
        chunk(call(1, name="b", arguments='{"y"')),
        chunk(call(1, arguments=": 2}")),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-abc", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 9}},
    ]
    events = _framed(writer, chunks)
    message = _accumulate(events)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert [getattr(b, "input", None) for b in message.content] == [None, {"x": 1}, {"y": 2}]
    starts = [e["index"] for e in events if e["type"] == "content_block_start"]
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert starts == stops == [0, 1, 2]
    assert message.usage.output_tokens == 9
    assert message.id == "msg_abc"


def test_a_stream_without_content_still_ends_as_a_message() -> None:
    writer = MessagesStream({"model": "m"})
    events = _framed(writer, [])
    assert [e["type"] for e in events] == ["message_start", "ping", "message_delta", "message_stop"]
    assert _accumulate(events).content == []


# -- errors --------------------------------------------------------------------------------------

ERRORS = [
    (BadRequest("bad"), "invalid_request_error"),
    (SwitchyardError("boom"), "api_error"),
    (RateLimited("slow down", retry_after=1), "rate_limit_error"),
    (NoBackendAvailable("none"), "overloaded_error"),
    (UpstreamTimeout("late"), "timeout_error"),
]


@pytest.mark.parametrize(("exc", "kind"), ERRORS, ids=[e[1] for e in ERRORS])
def test_errors_take_anthropics_shape(exc: SwitchyardError, kind: str) -> None:
    body = orjson.loads(error_body(exc))
    assert body == {"type": "error", "error": {"type": kind, "message": exc.message}}
    name, data = error_event(exc).split(b"\n", 1)
    assert name == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: ")) == body
