"""Property-based tests of the two parsers on the request path: request bodies (`parse_body`) and
upstream Server-Sent Events (`SSEDecoder`).

A body is either parsed or refused with `BadRequest`, whatever the bytes: no other exception, no
stack trace in the message, the parameter named as a plain string. An event stream decodes to the
same events however the network splits it, whatever its line endings, comments and fields.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.openai.base import OpenAIBaseModel, parse_body
from gateway.openai.chat.protocol import ChatCompletionRequest
from gateway.openai.completions.protocol import CompletionRequest
from gateway.openai.embeddings.protocol import EmbeddingRequest
from gateway.upstreams.sse import SSEDecoder

MODELS: list[type[OpenAIBaseModel]] = [ChatCompletionRequest, CompletionRequest, EmbeddingRequest]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
# Request-shaped bodies: the real field names with values of any type, plus unknown fields.
FIELDS = [
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "user",
    "encoding_format",
    "dimensions",
]
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot", ""]) | json_scalars},
    optional={"content": json_values, "name": json_values, "tool_calls": json_values},
)
field_value = (
    json_values
    | st.lists(message, max_size=4)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(["sim-model", "", "x" * 300])
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_value, max_size=8)


def _refused_cleanly(exc: BadRequest) -> None:
    assert exc.status == 400
    assert isinstance(exc.message, str) and exc.message
    assert "Traceback" not in exc.message and 'File "' not in exc.message
    assert exc.param is None or isinstance(exc.param, str)
    orjson.dumps(exc.to_dict())  # renders as the OpenAI error shape


def _parse(raw: bytes, model: type[OpenAIBaseModel]) -> None:
    try:
        body, parsed = parse_body(raw, model)
    except BadRequest as exc:
        _refused_cleanly(exc)
        return
    assert isinstance(body, dict) and isinstance(parsed, model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(raw=st.binary(max_size=300))
@example(raw=b"\xff\xfe{}")  # not UTF-8
@example(raw=b'{"model": "\xc3\x28"}')  # invalid UTF-8 inside a string
@example(raw=b"[" * 5000 + b"]" * 5000)  # deeper than any parser should follow
@example(raw=b'{"model": "m", "max_tokens": 1' + b"0" * 400 + b"}")  # a number no integer type holds
@example(raw=b"")
@example(raw=b"null")
def test_any_bytes_parse_or_are_refused_with_a_400(model: type[OpenAIBaseModel], raw: bytes) -> None:
    _parse(raw, model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FAST
@given(body=bodies)
@example(body={"model": "m", "messages": []})
@example(body={"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 10**9, "max_tokens": 10**12})
@example(body={"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1})
@example(body={"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})
@example(body={"model": ["m"], "messages": "hello"})
def test_any_request_shaped_body_parses_or_is_refused_with_a_400(
    model: type[OpenAIBaseModel], body: dict[str, Any]
) -> None:
    _parse(json.dumps(body).encode(), model)  # the stdlib writes integers of any size, as a client may


def test_deep_nesting_inside_a_message_is_refused_or_passed_not_crashed() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": [deep]}
    for depth_body in (
        {"model": "m", "messages": [{"role": "user", "content": [deep]}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": deep},
    ):
        _parse(json.dumps(depth_body).encode(), ChatCompletionRequest)


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest], ids=lambda m: m.__name__)
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, 1.0, [], {}])
def test_stream_must_be_a_real_boolean(model: type[OpenAIBaseModel], value: Any) -> None:
    """The body goes upstream as sent: a value the gateway reads as a stream and the upstream does
    not (or the other way round) would break the response, so only true, false or null pass."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x", "stream": value}
    with pytest.raises(BadRequest) as refused:
        parse_body(json.dumps(body).encode(), model)
    assert refused.value.param == "stream"


def test_thousands_of_tools_are_parsed_and_more_than_the_cap_refused() -> None:
    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool] * 5000}
    body, _ = parse_body(orjson.dumps(ok), ChatCompletionRequest)
    assert len(body["tools"]) == 5000
    with pytest.raises(BadRequest) as refused:
        parse_body(orjson.dumps({**ok, "tools": [tool] * 10_001}), ChatCompletionRequest)
    assert refused.value.param == "tools"


# -- SSE ---------------------------------------------------------------------------------------

line_text = st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b)
newline = st.sampled_from([b"\n", b"\r\n", b"\r"])
event_lines = st.lists(line_text, min_size=1, max_size=3)  # one event's data lines


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """An SSE byte stream and the data payloads it carries. One line ending per stream (a CR then
    an LF would be one CRLF, so mixing them changes what the bytes mean)."""
    events = draw(st.lists(event_lines, max_size=6))
    nl = draw(newline)
    out = b""
    for lines in events:
        if draw(st.booleans()):
            out += b": keep-alive" + nl
        if draw(st.booleans()):
            out += b"event: message" + nl + b"id: 7" + nl
        for data in lines:
            space = draw(st.sampled_from([b" ", b""])) if not data.startswith(b" ") else b" "
            out += b"data:" + space + data + nl
        out += nl
    # The one space after the colon, when there is one, is not part of the data (the SSE spec).
    return out, [b"\n".join(lines) for lines in events]


def _decode(chunks: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events + decoder.flush()


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=500, deadline=None)
@given(stream=event_streams(), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_a_stream_gives_the_same_events(stream: tuple[bytes, list[bytes]], cuts: list[int]) -> None:
    raw, expected = stream
    assert _decode([raw]) == expected
    assert _decode(_split(raw, cuts)) == expected
    assert _decode([raw[i : i + 1] for i in range(len(raw))]) == expected  # a byte at a time


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line_text, min_size=1, max_size=3), end=newline)
def test_a_last_event_without_its_blank_line_is_flushed(lines: list[bytes], end: bytes) -> None:
    raw = b"".join(b"data: " + line + end for line in lines)
    assert _decode([raw]) == [b"\n".join(lines)]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_never_raises_and_splits_do_not_matter(raw: bytes, cuts: list[int]) -> None:
    assert _decode(_split(raw, cuts)) == _decode([raw])
