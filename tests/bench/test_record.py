"""The incremental SSE parser: however the bytes are split, the record comes out the same."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.loadgen import RequestRecord, SseObserver
from bench.loadgen.record import parse_json_response


def chat_event(delta: Mapping[str, object], finish: str | None = None) -> bytes:
    obj = {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


STREAM = (
    chat_event({"role": "assistant", "content": ""})
    + chat_event({"content": "Hello"})
    + b": keep-alive comment\n\n"
    + chat_event({"content": " world"})
    + chat_event({}, "stop")
    + b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
    + b"data: [DONE]\n\n"
)


def feed(pieces: list[bytes]) -> tuple[RequestRecord, SseObserver]:
    rec = RequestRecord(index=0, start=100.0)
    rec.text = []
    obs = SseObserver(rec)
    for i, piece in enumerate(pieces):
        obs(piece, 100.0 + i)
    return rec, obs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_record(cuts: list[int]) -> None:
    points = sorted({0, *cuts, len(STREAM)})
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    rec, obs = feed(pieces)
    assert obs.done and rec.error is None
    assert "".join(rec.text or []) == "Hello world"
    assert len(rec.chunk_times) == 2 and rec.finish_reason == "stop"
    assert (rec.prompt_tokens, rec.output_tokens) == (7, 2)
    assert rec.ttft is not None and rec.ttft >= 0


def test_role_chunk_is_not_the_first_token() -> None:
    rec, _ = feed([chat_event({"role": "assistant", "content": ""}), chat_event({"content": "a"})])
    assert rec.ttft == 1.0  # the second piece, fed one "second" later


def test_crlf_framing() -> None:
    rec, obs = feed([STREAM.replace(b"\n", b"\r\n")])
    assert obs.done and "".join(rec.text or []) == "Hello world"


def test_tool_call_deltas_count_as_output() -> None:
    head = {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
    frag = {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    rec, _ = feed([chat_event(head), chat_event(frag), chat_event({}, "tool_calls")])
    assert rec.tool_called == "f" and len(rec.chunk_times) == 2 and rec.finish_reason == "tool_calls"


def test_completions_text() -> None:
    event = b'data: {"choices":[{"index":0,"text":"hi","finish_reason":null}]}\n\n'
    rec, _ = feed([event, event])
    assert "".join(rec.text or []) == "hihi" and len(rec.chunk_times) == 2


def test_malformed_event_and_error_event() -> None:
    rec, _ = feed([b'data: {"choices": [\n\n'])
    assert rec.error == "malformed_sse"
    rec, _ = feed([b'data: {"error": {"message": "upstream died"}}\n\n'])
    assert rec.error == "stream_error"


def test_two_data_lines_join_into_one_payload() -> None:
    rec, _ = feed([b'data: {"choices":[{"index":0,\ndata: "delta":{"content":"x"}}]}\n\n'])
    assert rec.error is None and rec.text == ["x"]


def test_json_response() -> None:
    rec = RequestRecord(index=0)
    body = {
        "choices": [
            {"message": {"content": "hey", "tool_calls": [{"function": {"name": "g"}}]}, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    parse_json_response(rec, json.dumps(body).encode())
    assert (rec.prompt_tokens, rec.output_tokens, rec.tool_called, rec.finish_reason) == (3, 4, "g", "tool_calls")
    bad = RequestRecord(index=0)
    parse_json_response(bad, b'{"choices": [')
    assert bad.error == "malformed_json"


def test_headers() -> None:
    rec = RequestRecord(index=0)
    rec.take_headers({b"x-switchyard-cache": b"semantic", b"x-switchyard-tools": b"120->8"})
    assert (rec.cache, rec.tools_in, rec.tools_out) == ("semantic", 120, 8)
