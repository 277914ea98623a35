"""The sim as an Anthropic Messages server, over real HTTP, driven by the official `anthropic` SDK."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from tests.support.processes import ServerProcess, free_port

MODEL = "sim-model"
WEATHER: Any = {
    "name": "get_weather",
    "description": "current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerProcess]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "sim",
        "--port",
        str(port),
        "--models",
        MODEL,
        "--output-tokens",
        "6",
        "--apis",
        "messages",
    ]
    with ServerProcess(args, port) as server:
        yield server


@pytest.fixture
def client(sim: ServerProcess) -> Iterator[anthropic.Anthropic]:
    httpx.post(sim.url + "/sim/reset")
    with anthropic.Anthropic(base_url=sim.url, api_key="sk-upstream", max_retries=0) as c:
        yield c


def test_create_answers_a_message_with_usage(client: anthropic.Anthropic, sim: ServerProcess) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and len(message.content[0].text.split()) == 6
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 6 and message.usage.input_tokens > 0
    seen = httpx.get(sim.url + "/sim/stats").json()["recent"][-1]["headers"]
    # The SDK presents its key as x-api-key (older releases) or as a bearer token (newer ones).
    assert "sk-upstream" in (seen.get("x-api-key"), seen.get("authorization", "").removeprefix("Bearer "))
    assert seen["anthropic-version"]


def test_stream_sends_the_named_events_in_order(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "count"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3
    assert len(final.content[0].text.split()) == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_fills_the_schema(client: anthropic.Anthropic, stream: bool) -> None:
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 50,
        "tools": [WEATHER],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "weather in Oslo?"}],
    }
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert set(block.input) == {"city"}
    assert message.stop_reason == "tool_use"


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi " * 20}])
    assert 0 < short.input_tokens < longer.input_tokens


def test_errors_take_anthropics_shape(client: anthropic.Anthropic, sim: ServerProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    missing = httpx.post(
        sim.url + "/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(
            model=MODEL,
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sim": {"fault": "error", "status": 500}},
        )


def test_a_messages_only_sim_refuses_chat(sim: ServerProcess) -> None:
    assert httpx.post(sim.url + "/v1/chat/completions", json={"model": MODEL, "messages": []}).status_code == 404


def test_a_dropped_stream_is_an_error_for_the_sdk(client: anthropic.Anthropic) -> None:
    with (
        pytest.raises((anthropic.APIError, httpx2.HTTPError)),
        client.messages.stream(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sim": {"fault": "disconnect", "after_chunks": 2}},
        ) as s,
    ):
        s.get_final_message()
