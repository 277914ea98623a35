"""Table tests of the Responses ⇄ chat translation (pure functions), against answers recorded from
real servers (tests/gateway/fixtures/responses_translation.json): vLLM's chat completions, plain and
streamed, and its own /v1/responses for the same question; the sim's tool calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.errors import BadRequest
from gateway.openai.responses.dialect import RESPONSES, ResponsesAssembler, replay_response
from gateway.openai.responses.translate import ChatToResponsesStream, request_to_chat, response_from_chat

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "responses_translation.json").read_text())
TOOL = {"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.mark.parametrize(
    ("request_body", "expected"),
    [
        ({"input": "hi"}, {"messages": [{"role": "user", "content": "hi"}]}),
        (
            {"input": "hi", "instructions": "Be brief.", "max_output_tokens": 5, "temperature": 0, "top_p": 0.5},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
             "max_tokens": 5, "temperature": 0, "top_p": 0.5},
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"},
                                                    {"type": "input_text", "text": "b"}]},
                       {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
                       {"type": "reasoning", "id": "rs_1", "summary": []},
                       CALL,
                       {"type": "function_call_output", "call_id": "call_1", "output": "18C"}]},
            {"messages": [{"role": "user", "content": "ab"},
                          {"role": "assistant", "content": "c", "tool_calls": [
                              {"id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]},
        ),
        (
            {"input": "hi", "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
             "parallel_tool_calls": False},
            {"messages": [{"role": "user", "content": "hi"}],
             "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                                                          "parameters": {"type": "object"}}}],
             "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False},
        ),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"},
                                                "strict": True}}},
            {"messages": [{"role": "user", "content": "hi"}],
             "response_format": {"type": "json_schema",
                                 "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}},
        ),
        (
            {"input": "hi", "stream": True, "store": False, "metadata": {"k": "v"}, "reasoning": {"effort": "low"}},
            {"messages": [{"role": "user", "content": "hi"}], "stream": True,
             "stream_options": {"include_usage": True}, "reasoning_effort": "low"},
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]}]},
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]},
        ),
    ],
    ids=["string", "sampling", "items", "tools", "json_schema", "state_fields", "image"],
)  # fmt: skip
def test_requests_translate_to_chat(request_body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert request_to_chat({"model": "m", **request_body}) == {"model": "m", **expected}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "file_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
    ],
)
def test_what_chat_cannot_express_is_a_400_naming_it(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        request_to_chat({"model": "m", "input": "hi", **extra})
    assert refused.value.param == param


def test_a_recorded_chat_answer_becomes_the_response_vllm_gives() -> None:
    native = FIXTURES["vllm_responses"]
    translated = response_from_chat(FIXTURES["vllm_chat"], {"model": "m", "instructions": "Be brief.", "input": "x"})
    assert translated["output"][0]["content"][0]["text"] == native["output"][0]["content"][0]["text"]
    assert translated["status"] == native["status"] == "incomplete"
    assert translated["incomplete_details"] == native["incomplete_details"]
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert translated["usage"][key] == native["usage"][key]
    # The same shape as vLLM's own: every field a client reads is there.
    assert {"id", "object", "created_at", "model", "output", "status", "usage", "tools", "tool_choice"} <= set(
        translated
    )
    assert set(native["output"][0]) - {"phase"} <= set(translated["output"][0])


def _stream(chunks: list[dict[str, Any]], request: dict[str, Any]) -> list[dict[str, Any]]:
    translator = ChatToResponsesStream(request)
    events = [e for c in chunks for e in translator.feed(c)]
    return events + translator.close()


def test_a_recorded_chat_stream_becomes_the_typed_event_sequence() -> None:
    events = _stream(FIXTURES["vllm_chat_stream"], {"model": "m", "input": "x"})
    kinds = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert kinds == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    text = FIXTURES["vllm_chat"]["choices"][0]["message"]["content"]
    assert "".join(deltas) == text == final["output"][0]["content"][0]["text"]
    assert final["usage"]["output_tokens"] == FIXTURES["vllm_responses"]["usage"]["output_tokens"]
    assert final["status"] == "incomplete"
    # Item ids agree across the events that name an item.
    item_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events if "item_id" in e} == {item_id} == {final["output"][0]["id"]}


def test_a_recorded_tool_call_stream_becomes_function_call_events() -> None:
    events = _stream(FIXTURES["sim_tool_chat_stream"], {"model": "m", "input": "x", "tools": [TOOL]})
    kinds = [e["type"] for e in events]
    assert kinds[2] == "response.output_item.added" and events[2]["item"]["type"] == "function_call"
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    chat_call = FIXTURES["sim_tool_chat"]["choices"][0]["message"]["tool_calls"][0]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    item = events[-1]["response"]["output"][0]
    assert deltas == item["arguments"] == events[-3]["arguments"]
    assert json.loads(deltas).keys() == json.loads(chat_call["function"]["arguments"]).keys()
    assert item["name"] == "get_weather" and item["call_id"].startswith("call_")
    plain = response_from_chat(FIXTURES["sim_tool_chat"], {"model": "m", "input": "x"})
    assert (
        plain["output"][0]["type"] == "function_call"
        and plain["output"][0]["arguments"] == chat_call["function"]["arguments"]
    )
    assert RESPONSES.called_tools(plain) == ["get_weather"] and RESPONSES.finish_reason(plain) == "tool_calls"


def test_a_stored_response_replays_as_a_stream_that_reassembles_to_it() -> None:
    for response in (
        FIXTURES["vllm_responses"],
        response_from_chat(FIXTURES["sim_tool_chat"], {"model": "m", "input": "x"}),
    ):
        events = replay_response(response)
        assembler = ResponsesAssembler()
        assert any([assembler.feed(e) for e in events])
        assert assembler.response("m") == response
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        framed = RESPONSES.replay(response, True)
        assert framed[0].startswith(b"event: response.created\ndata: ")
        assert orjson.loads(framed[-1].split(b"data: ", 1)[1]) == events[-1]


def test_the_dialect_reads_usage_and_upstream_errors() -> None:
    assert RESPONSES.usage_of(FIXTURES["vllm_responses"]) == (
        FIXTURES["vllm_responses"]["usage"]["input_tokens"], FIXTURES["vllm_responses"]["usage"]["output_tokens"]
    )  # fmt: skip
    assert RESPONSES.error_in({"type": "error", "message": "boom"}) == "boom"
    assert RESPONSES.error_in({"type": "response.failed", "response": {"error": {"message": "x"}}}) == "x"
    assert RESPONSES.error_in({"type": "response.output_text.delta", "delta": "a"}) is None
    assert RESPONSES.stream_finished(b'{"type":"response.completed","response":{}}')
    assert not RESPONSES.stream_finished(b'{"type":"response.output_text.delta"}')
