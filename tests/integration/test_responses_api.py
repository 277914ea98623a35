"""The Responses API through the gateway, driven by the official `openai` SDK (and the OpenAI
Agents SDK) over real HTTP, in front of `switchyard sim`, which speaks only chat completions: every
request is translated to chat and its answer back. Stored state lives in the gateway, scoped by
tenant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.auth import hash_key
from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import SimControl, sim_backend, start_gateway, start_sim

MODEL = "sim-model"
KEYS = {"alpha": "sk-alpha-responses", "beta": "sk-beta-responses"}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("responses")
    sim = start_sim(log_dir=tmp)
    try:
        config = {
            "auth": {"keys": [{"sha256": hash_key(k), "tenant": t} for t, k in KEYS.items()]},
            "cache": {"enabled": False},
            "backends": [sim_backend("sim", sim, models=[MODEL])],
        }
        gateway = start_gateway(config, tmp)
        try:
            yield gateway, sim
        finally:
            gateway.stop()
    finally:
        sim.stop()


def _client(gateway: ServerProcess, tenant: str = "alpha") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[tenant], max_retries=0, timeout=30)


@pytest.fixture
def client(stack: tuple[ServerProcess, ServerProcess]) -> Iterator[openai.OpenAI]:
    with _client(stack[0]) as sdk:
        yield sdk


def _last_chat_body(sim: ServerProcess) -> dict[str, Any]:
    recent = [r for r in SimControl(sim).stats()["recent"] if r["path"] == "/v1/chat/completions"]
    return recent[-1]["body"]  # type: ignore[no-any-return]


def test_create_retrieve_and_delete(client: openai.OpenAI, stack: tuple[ServerProcess, ServerProcess]) -> None:
    created = client.responses.create(model=MODEL, input="Tell me about trains", instructions="Be brief.",
                                      max_output_tokens=9, temperature=0.5)  # fmt: skip
    assert created.object == "response" and created.id.startswith("resp_")
    assert created.output_text and created.output[0].type == "message"
    assert created.usage is not None and created.usage.output_tokens == 9 and created.usage.input_tokens > 0
    assert created.status == "incomplete" and created.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    chat = _last_chat_body(stack[1])
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][1] == {"role": "user", "content": "Tell me about trains"}
    assert chat["max_tokens"] == 9 and chat["temperature"] == 0.5

    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    items = client.responses.input_items.list(created.id)
    assert [(i.type, getattr(i, "role", None)) for i in items.data] == [("message", "user")]

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_stream_is_the_typed_event_sequence(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Stream a few words", max_output_tokens=6) as stream:
        events: list[Any] = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"
    ]  # fmt: skip
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 6 and "".join(deltas) == final.output_text
    assert final.usage is not None and final.usage.output_tokens == 6 and final.status == "incomplete"
    assert client.responses.retrieve(final.id).output_text == final.output_text  # streams are stored too


def test_multi_turn_over_previous_response_id(
    client: openai.OpenAI, stack: tuple[ServerProcess, ServerProcess]
) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Remember names.")
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    chat = _last_chat_body(stack[1])
    # The whole conversation went upstream; earlier instructions are not carried over (as OpenAI).
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        ("user", "My name is Ada."), ("assistant", first.output_text), ("user", "What is my name?")
    ]  # fmt: skip
    assert client.responses.retrieve(second.id).previous_response_id == first.id
    third = client.responses.create(model=MODEL, input="And again?", previous_response_id=second.id, stream=True)
    completed = [e for e in third if e.type == "response.completed"]
    assert len(completed) == 1
    assert len(_last_chat_body(stack[1])["messages"]) == 5
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_does_not_exist")
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_function_tool_round_trip(client: openai.OpenAI, stack: tuple[ServerProcess, ServerProcess]) -> None:
    asked = client.responses.create(model=MODEL, input="What's the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required")  # fmt: skip
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    chat = _last_chat_body(stack[1])
    assert chat["tools"] == [
        {"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}
    ]
    assert chat["tool_choice"] == "required"

    answered = client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 18}'}],
        tools=[WEATHER],
    )
    assert answered.output_text
    messages = _last_chat_body(stack[1])["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": '{"temp_c": 18}'}


def test_streamed_function_call_arguments(client: openai.OpenAI) -> None:
    forced: Any = {"type": "function", "name": "get_weather"}
    stream = client.responses.create(
        model=MODEL, input="weather in Oslo", tools=[WEATHER], tool_choice=forced, stream=True
    )
    events: list[Any] = list(stream)
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert done.arguments == deltas and json.loads(deltas)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Forget this", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_another_tenants_response_is_not_found(stack: tuple[ServerProcess, ServerProcess]) -> None:
    with _client(stack[0], "alpha") as alpha, _client(stack[0], "beta") as beta:
        mine = alpha.responses.create(model=MODEL, input="private to alpha")
        for attempt in (
            lambda: beta.responses.retrieve(mine.id),
            lambda: beta.responses.input_items.list(mine.id),
            lambda: beta.responses.delete(mine.id),
            lambda: beta.responses.create(model=MODEL, input="hi", previous_response_id=mine.id),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                attempt()
            assert set(refused.value.body) == {"message", "type", "param", "code"}  # type: ignore[call-overload]
        assert alpha.responses.retrieve(mine.id).id == mine.id  # untouched by beta's delete


def test_fields_translation_cannot_honour_are_400s_naming_them(stack: tuple[ServerProcess, ServerProcess]) -> None:
    url = stack[0].url + "/v1/responses"
    headers = {"authorization": f"Bearer {KEYS['alpha']}"}
    for extra, param in (
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
    ):
        response = httpx.post(url, headers=headers, json={"model": MODEL, "input": "hi", **extra})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    bad = httpx.post(url, headers=headers, json={"model": MODEL})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


def test_structured_output_goes_as_a_json_schema(
    client: openai.OpenAI, stack: tuple[ServerProcess, ServerProcess]
) -> None:
    schema: Any = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.responses.create(
        model=MODEL, input="Answer in JSON", text={"format": {"type": "json_schema", "name": "a", "schema": schema}}
    )
    assert _last_chat_body(stack[1])["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "a", "schema": schema}
    }  # fmt: skip


def test_an_agent_runs_two_turns_with_a_function_tool(stack: tuple[ServerProcess, ServerProcess]) -> None:
    agents = pytest.importorskip("agents")
    calls: list[str] = []

    @agents.function_tool  # type: ignore[untyped-decorator]
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    async def two_turns() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=stack[0].url + "/v1", api_key=KEYS["alpha"], max_retries=0) as sdk:
            model = agents.OpenAIResponsesModel(model=MODEL, openai_client=sdk)
            agent = agents.Agent(name="weather", instructions="Use the tool.", model=model, tools=[get_weather])
            # Turn one: the model calls the tool, the agent runs it and sends its output back, the
            # model answers. Turn two continues from it over the gateway's stored state.
            first = await agents.Runner.run(agent, "What's the weather in Lyon?", max_turns=3)
            second = await agents.Runner.run(
                agent, "And in Nice?", previous_response_id=first.last_response_id, max_turns=3
            )
            return first, second

    agents.set_tracing_disabled(True)
    first, second = asyncio.run(two_turns())
    assert len(calls) == 2  # one tool call per turn (the sim picks its arguments from the words)
    assert isinstance(first.final_output, str) and first.final_output
    assert isinstance(second.final_output, str) and second.final_output


def test_the_exact_cache_answers_responses_in_their_own_stream(tmp_path: Path) -> None:
    sim = start_sim(log_dir=tmp_path)
    try:
        config = {
            "auth": {"mode": "none"},
            "cache": {"semantic": False},
            "backends": [sim_backend("sim", sim, models=[MODEL])],
        }
        gateway = start_gateway(config, tmp_path)
        try:
            with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as sdk:
                request: Any = {
                    "model": MODEL,
                    "input": "Cache this answer",
                    "temperature": 0,
                    "instructions": "Be brief.",
                }
                first = sdk.responses.with_raw_response.create(**request)
                assert first.headers["x-switchyard-cache"] == "miss"
                again = sdk.responses.with_raw_response.create(**request)
                assert again.headers["x-switchyard-cache"] == "exact"
                assert again.parse().output_text == first.parse().output_text
                assert again.parse().id != first.parse().id
                with sdk.responses.stream(**request) as stream:
                    kinds = [e.type for e in stream]
                    replayed = stream.get_final_response()
                assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
                assert replayed.output_text == first.parse().output_text
                assert sdk.responses.retrieve(replayed.id).output_text == replayed.output_text  # stored as well
                # The canonical request is the chat form: the same question over chat is the same entry.
                chat = sdk.chat.completions.with_raw_response.create(
                    model=MODEL, temperature=0,
                    messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Cache this answer"}],
                )  # fmt: skip
                assert chat.headers["x-switchyard-cache"] == "exact"
                assert chat.parse().choices[0].message.content == first.parse().output_text
            assert SimControl(sim).requests_to() == 1
        finally:
            gateway.stop()
    finally:
        sim.stop()


def test_stored_responses_in_redis_are_shared_by_replicas_and_redis_down_is_a_503(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sim = start_sim(log_dir=tmp_path)
    replicas: list[ServerProcess] = []
    try:
        config = {
            "auth": {"keys": [{"sha256": hash_key(k), "tenant": t} for t, k in KEYS.items()]},
            "redis": {"url": redis_server.url},
            "cache": {"enabled": False},
            "responses": {"ttl": 600},
            "backends": [sim_backend("sim", sim, models=[MODEL])],
        }
        replicas = [start_gateway(config, tmp_path, name=f"replica{i}") for i in range(2)]
        with _client(replicas[0]) as one, _client(replicas[1]) as two, _client(replicas[1], "beta") as other:
            first = one.responses.create(model=MODEL, input="Kept in Redis")
            assert two.responses.retrieve(first.id).output_text == first.output_text
            follow = two.responses.create(model=MODEL, input="Go on", previous_response_id=first.id)
            assert one.responses.input_items.list(follow.id).data[0].type == "message"
            with pytest.raises(openai.NotFoundError):
                other.responses.retrieve(first.id)
            redis_server.stop()
            with pytest.raises(openai.APIStatusError) as down:
                two.responses.create(model=MODEL, input="Go on", previous_response_id=follow.id)
            assert down.value.status_code == 503
            assert down.value.response.headers.get("retry-after")
            sim_requests = SimControl(sim).requests_to()
            assert sim_requests == 2  # the turn whose history could not be read never went upstream
    finally:
        for replica in replicas:
            replica.stop()
        sim.stop()


def test_failover_before_the_first_event_and_an_error_event_after_it(tmp_path: Path) -> None:
    broken, healthy = start_sim(log_dir=tmp_path, name="broken"), start_sim(log_dir=tmp_path, name="healthy")
    try:
        SimControl(broken).configure(faults={"error": 1.0})
        config = {
            "auth": {"mode": "none"},
            "cache": {"enabled": False},
            "backends": [
                sim_backend("broken", broken, models=[MODEL]),
                sim_backend("healthy", healthy, models=[MODEL]),
            ],
        }
        gateway = start_gateway(config, tmp_path)
        try:
            with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as sdk:
                for _ in range(3):  # whichever backend is picked first, the answer comes
                    events = list(sdk.responses.create(model=MODEL, input="fail over", stream=True))
                    assert events[-1].type == "response.completed"
                SimControl(broken).configure(faults={"error": 0.0})
                for sim in (broken, healthy):
                    SimControl(sim).configure(faults={"disconnect": 1.0})
                seen: list[str] = []
                with pytest.raises(openai.APIError):
                    for event in sdk.responses.create(model=MODEL, input="drop mid-stream", stream=True):
                        seen.append(event.type)
                assert seen and seen[0] == "response.created" and "response.completed" not in seen
        finally:
            gateway.stop()
    finally:
        broken.stop()
        healthy.stop()
