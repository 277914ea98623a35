"""The Responses API on the built-in engine (which speaks only chat completions: every request is
translated), over real HTTP with the `openai` SDK. A tiny random Llama keeps it fast; the grammar
decides what forced tool calls and structured outputs may say, so those must parse and validate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.support.stack import TINY_MODEL, start_engine_gateway, tiny_engine

MODEL = TINY_MODEL
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 8}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    tmp = tmp_path_factory.mktemp("engine-responses")
    engine = tiny_engine(tmp, max_num_seqs=8, max_num_batched_tokens=256)
    gateway = start_engine_gateway(tmp, MODEL, engine, timeout=180)
    try:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60) as sdk:
            yield sdk
    finally:
        gateway.stop()


def test_create_stream_retrieve_delete(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input="Hello", instructions="Be brief.", max_output_tokens=5,
                                    temperature=0)  # fmt: skip
    assert plain.usage is not None and plain.usage.output_tokens == 5 and plain.status == "incomplete"
    assert client.responses.retrieve(plain.id).output_text == plain.output_text
    with client.responses.stream(model=MODEL, input="Hello", instructions="Be brief.", max_output_tokens=5,
                                 temperature=0) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.output_text == plain.output_text  # greedy: the same text streamed or not
    client.responses.delete(plain.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(plain.id)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_forced_function_call_round_trip(client: openai.OpenAI, stream: bool) -> None:
    # The random model may spell the markup a byte a token and the city in 4-byte characters: about
    # 110 tokens at worst, so the budget leaves room for the grammar to close the call.
    request: Any = {"model": MODEL, "input": "Weather in Rome?", "tools": [WEATHER], "tool_choice": "required",
                    "parallel_tool_calls": False, "max_output_tokens": 256}  # fmt: skip
    if stream:
        with client.responses.stream(**request) as events:
            arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
            asked = events.get_final_response()
    else:
        asked = client.responses.create(**request)
    assert asked.status == "completed"
    calls: list[Any] = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    if stream:
        assert arguments == calls[0].arguments
    answered = client.responses.create(
        model=MODEL, previous_response_id=asked.id, max_output_tokens=4, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )  # fmt: skip
    assert answered.status in ("completed", "incomplete") and answered.usage is not None
    items = client.responses.input_items.list(answered.id)
    assert [i.type for i in items.data] == ["function_call_output"]


def test_text_format_json_schema_is_honoured(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}  # fmt: skip
    reply = client.responses.create(
        model=MODEL, input="Answer", max_output_tokens=32,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
    )  # fmt: skip
    jsonschema.validate(json.loads(reply.output_text), schema)


def test_store_false_and_unknown_ids(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="Hi", previous_response_id=reply.id)
