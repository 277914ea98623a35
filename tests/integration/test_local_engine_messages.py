"""POST /v1/messages in front of the built-in engine (which speaks chat only: every request is
translated), over real HTTP with the official `anthropic` SDK. A tiny random Llama keeps it fast:
what it says is noise, but a forced tool call is grammar-bound, so its input must fit the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import TINY_MODEL, start_engine_gateway, tiny_engine

MODEL = TINY_MODEL
WEATHER: Any = {
    "name": "get_weather",
    "description": "current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("engine-messages")
    gw = start_engine_gateway(tmp, MODEL, tiny_engine(tmp, max_num_batched_tokens=256), timeout=180)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0, timeout=120) as sdk:
        yield sdk


def test_create_and_stream(client: anthropic.Anthropic) -> None:
    asked: Any = {
        "model": MODEL,
        "max_tokens": 6,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": "Hello there"}],
        "extra_body": {"top_k": 1},
    }
    plain = client.messages.create(**asked)
    assert plain.stop_reason == "max_tokens" and plain.usage.output_tokens == 6
    assert plain.usage.input_tokens > 0
    with client.messages.stream(**asked) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == plain.usage.input_tokens
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]  # top_k 1: greedy


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_use_round_trip(client: anthropic.Anthropic, stream: bool) -> None:
    turns: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    asked: Any = {
        "model": MODEL,
        "max_tokens": 200,
        "extra_body": {"temperature": 0},
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": turns,
    }
    if stream:
        with client.messages.stream(**asked) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(**asked)
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and set(call.input) == {"city"}
    assert first.stop_reason == "tool_use"
    turns += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12 C"}]},
    ]
    answer = client.messages.create(
        model=MODEL, max_tokens=4, tools=[WEATHER], tool_choice={"type": "none"}, messages=turns
    )
    assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"


def test_count_tokens_uses_the_engines_tokenizer(client: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "Hello there"}]
    raw = client.messages.with_raw_response.count_tokens(model=MODEL, messages=ask)
    assert raw.headers["x-switchyard-token-count"] == "tokenizer"
    created = client.messages.create(model=MODEL, max_tokens=1, messages=ask)
    assert raw.parse().input_tokens == created.usage.input_tokens  # the prompt the engine ran


def test_what_the_engine_cannot_do_is_a_400_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
                    ],
                }
            ],
        )
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in body["error"]["message"] or "document" in body["error"]["message"]
