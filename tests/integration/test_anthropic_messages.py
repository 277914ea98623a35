"""POST /v1/messages through a real gateway in front of a real `switchyard sim`, driven by the
official `anthropic` SDK over HTTP, in both modes: `native` (the backend declares the Messages
API: the body goes through untouched) and `translated` (a chat-only backend: the gateway
translates to chat completions and back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.auth import hash_key
from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim

CLIENT_KEY = "sk-client-messages"
MODES = ("native", "translated")  # the model names; each has its own backend
WEATHER: Any = {
    "name": "get_weather",
    "description": "current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

Stack = tuple[ServerProcess, SimControl]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("messages")
    sim = start_sim("--models", ",".join(MODES), "--output-tokens", "8", "--itl-ms", "1", log_dir=tmp)
    config = {
        "auth": {"keys": [{"sha256": hash_key(CLIENT_KEY), "tenant": "alpha"}]},
        "cache": {"enabled": False},
        "resilience": {"retries": 0},
        "backends": [
            sim_backend("sim-native", sim, models=["native"], apis=["chat", "messages"]),
            sim_backend("sim-chat", sim, models=["translated"], apis=["chat"]),  # declared: no discovery
        ],
    }
    gateway = start_gateway(config, tmp)
    try:
        yield gateway, SimControl(sim)
    finally:
        gateway.stop()
        sim.stop()


@pytest.fixture
def sim(stack: Stack) -> SimControl:
    control = stack[1]
    control.reset()
    return control


@pytest.fixture
def client(stack: Stack, sim: SimControl) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=stack[0].url, api_key=CLIENT_KEY, max_retries=0) as sdk:
        yield sdk


def _upstream_path(mode: str) -> str:
    return "/v1/messages" if mode == "native" else "/v1/chat/completions"


@pytest.mark.parametrize("mode", MODES)
def test_create(client: anthropic.Anthropic, sim: SimControl, mode: str) -> None:
    message = client.messages.create(
        model=mode, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.type == "message" and message.role == "assistant" and message.model == mode
    assert message.content[0].type == "text" and len(message.content[0].text.split()) == 8
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 8 and message.usage.input_tokens > 0
    assert sim.requests_to(_upstream_path(mode)) == 1


def test_metrics_are_labelled_by_endpoint(client: anthropic.Anthropic, stack: Stack) -> None:
    client.messages.create(model="native", max_tokens=10, messages=[{"role": "user", "content": "count me"}])
    text = httpx.get(stack[0].url + "/metrics").text
    assert metric_value(text, "switchyard_requests_total", endpoint="messages", model="native", status="200") >= 1
    openapi = httpx.get(stack[0].url + "/openapi.json").json()
    assert {"/v1/messages", "/v1/messages/count_tokens"} <= set(openapi["paths"])


@pytest.mark.parametrize("mode", MODES)
def test_stream_gives_the_same_text_as_create(client: anthropic.Anthropic, mode: str) -> None:
    asked: Any = {"model": mode, "max_tokens": 100, "messages": [{"role": "user", "content": "count for me"}]}
    plain = client.messages.create(**asked)
    with client.messages.stream(**asked) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("mode", MODES)
def test_tool_use_round_trip(client: anthropic.Anthropic, sim: SimControl, mode: str) -> None:
    turns: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.messages.create(
        model=mode, max_tokens=100, tools=[WEATHER], tool_choice={"type": "any"}, messages=turns
    )
    call = first.content[0]
    assert call.type == "tool_use" and call.name == "get_weather" and "city" in call.input
    assert first.stop_reason == "tool_use"
    turns += [
        {"role": "assistant", "content": [c.model_dump() for c in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12 C, cloudy"}]},
    ]
    with client.messages.stream(
        model=mode,
        max_tokens=100,
        tools=[WEATHER],
        messages=turns,
        extra_headers={"x-request-id": f"round-trip-{mode}"},
    ) as stream:
        answer = stream.get_final_message()
    assert answer.content and answer.stop_reason in ("end_turn", "tool_use")
    sent = sim.last_request()["body"]
    if mode == "native":
        assert sent["messages"] == turns  # untouched
    else:
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "12 C, cloudy"}
        assert sent["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_native_pass_through_forwards_the_version_headers_and_unknown_fields(
    client: anthropic.Anthropic, sim: SimControl
) -> None:
    client.messages.create(
        model="native",
        max_tokens=20,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "some-beta-2025-01-01"},
        extra_body={"vendor_field": {"x": 1}},
    )
    seen = sim.last_request()
    assert seen["headers"]["anthropic-beta"] == "some-beta-2025-01-01"
    assert seen["headers"]["anthropic-version"]
    assert seen["body"]["vendor_field"] == {"x": 1}
    assert CLIENT_KEY not in str(seen["headers"])  # the client's key is the gateway's, never the upstream's


def test_a_field_translation_cannot_honour_is_a_400_naming_it(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="translated",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "thinking" in body["error"]["message"]


@pytest.mark.parametrize("mode", MODES)
def test_count_tokens(client: anthropic.Anthropic, mode: str) -> None:
    raw = client.messages.with_raw_response.count_tokens(model=mode, messages=[{"role": "user", "content": "hi " * 30}])
    short = client.messages.count_tokens(model=mode, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-switchyard-token-count"] == ("native" if mode == "native" else "estimate")
    assert 0 < short.input_tokens < raw.parse().input_tokens


@pytest.mark.parametrize("mode", MODES)
def test_an_error_mid_stream_is_raised_by_the_sdk(client: anthropic.Anthropic, sim: SimControl, mode: str) -> None:
    sim.configure(faults={"disconnect": 1.0}, disconnect_after_chunks=3)
    received: list[str] = []
    try:
        with (
            pytest.raises(anthropic.APIStatusError) as caught,
            client.messages.stream(model=mode, max_tokens=100, messages=[{"role": "user", "content": "go on"}]) as s,
        ):
            received.extend(event.type for event in s)
    finally:
        sim.configure(faults={"disconnect": 0.0})
    assert received[:2] == ["message_start", "content_block_start"]  # the stream had begun: an error event
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"


def test_errors_take_anthropics_shape(stack: Stack) -> None:
    url = stack[0].url + "/v1/messages"
    asked = {"model": "native", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    wrong_key = httpx.post(url, json=asked, headers={"x-api-key": "sk-wrong"})
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["type"] == "authentication_error" and wrong_key.json()["type"] == "error"
    unknown = httpx.post(url, json={**asked, "model": "nope"}, headers={"x-api-key": CLIENT_KEY})
    assert (unknown.status_code, unknown.json()["error"]["type"]) == (404, "not_found_error")
    no_max = httpx.post(
        url, json={k: v for k, v in asked.items() if k != "max_tokens"}, headers={"x-api-key": CLIENT_KEY}
    )
    assert no_max.status_code == 400 and "max_tokens" in no_max.json()["error"]["message"]
    ok = httpx.post(url, json=asked, headers={"x-api-key": CLIENT_KEY})  # Anthropic's own header
    assert ok.status_code == 200 and ok.json()["type"] == "message"


@pytest.fixture(scope="module")
def cached(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second gateway in front of the same sim, with the exact response cache on."""
    tmp = tmp_path_factory.mktemp("messages-cache")
    sim_url = stack[1].url
    config = {
        "auth": {"mode": "none"},
        "backends": [
            {"name": "sim-native", "base_url": sim_url + "/v1", "models": ["native"], "apis": ["chat", "messages"]},
            {"name": "sim-chat", "base_url": sim_url + "/v1", "models": ["translated"], "apis": ["chat"]},
        ],
    }
    gateway = start_gateway(config, tmp)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_cache_hit_is_replayed_as_messages(cached: ServerProcess, sim: SimControl, mode: str) -> None:
    asked: Any = {
        "model": mode,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": f"cache me ({mode})"}],
        "extra_body": {"temperature": 0},
    }
    with anthropic.Anthropic(base_url=cached.url, api_key="x", max_retries=0) as sdk:
        first = sdk.messages.with_raw_response.create(**asked)
        assert first.headers["x-switchyard-cache"] == "miss"
        again = sdk.messages.with_raw_response.create(**asked)
        assert again.headers["x-switchyard-cache"] == "exact"
        with sdk.messages.stream(**asked) as stream:
            assert stream.response.headers["x-switchyard-cache"] == "exact"
            kinds = [event.type for event in stream]
            streamed = stream.get_final_message()
    assert sim.requests_to(_upstream_path(mode)) == 1  # answered once; the rest from the cache
    original, hit = first.parse(), again.parse()
    assert hit.content == original.content and hit.usage == original.usage and hit.id != original.id
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert streamed.content[0].text == original.content[0].text  # type: ignore[union-attr]
    # The same question in chat completions is the same cache entry.
    chat = httpx.post(
        cached.url + "/v1/chat/completions",
        json={
            "model": mode,
            "max_tokens": 50,
            "temperature": 0,
            "messages": [{"role": "user", "content": f"cache me ({mode})"}],
        },
    )
    assert chat.headers["x-switchyard-cache"] == "exact"
    assert chat.json()["choices"][0]["message"]["content"] == original.content[0].text


def test_chat_clients_reach_a_messages_only_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A backend of type `anthropic` (here the sim serving Messages only): chat completions are
    translated to Messages (key as x-api-key, an anthropic-version sent) and the answer back."""
    import openai

    tmp = tmp_path_factory.mktemp("anthropic-backend")
    sim = start_sim("--models", "claude-sim", "--apis", "messages", "--output-tokens", "5", log_dir=tmp)
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "backends": [{"name": "claude", "type": "anthropic", "base_url": sim.url + "/v1", "api_key_env": "CLAUDE_KEY"}],
    }
    gateway = start_gateway(config, tmp, env={"CLAUDE_KEY": "sk-ant-upstream"})
    control = SimControl(sim)
    try:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as chat:
            reply = chat.chat.completions.create(
                model="claude-sim",
                max_tokens=20,
                messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
            )
            assert reply.choices[0].finish_reason == "stop"
            assert reply.choices[0].message.content and len(reply.choices[0].message.content.split()) == 5
            assert reply.usage is not None and reply.usage.completion_tokens == 5
            seen = control.last_request()
            assert seen["path"] == "/v1/messages"
            assert seen["headers"]["x-api-key"] == "sk-ant-upstream" and seen["headers"]["anthropic-version"]
            assert seen["body"]["system"] == [{"type": "text", "text": "Be brief."}]
            chunks = list(
                chat.chat.completions.create(
                    model="claude-sim",
                    max_tokens=20,
                    stream=True,
                    stream_options={"include_usage": True},
                    tools=[
                        {
                            "type": "function",
                            "function": {"name": WEATHER["name"], "parameters": WEATHER["input_schema"]},
                        }
                    ],
                    tool_choice="required",
                    messages=[{"role": "user", "content": "weather in Oslo"}],
                )
            )
            calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
            assert calls[0] is not None and calls[0][0].function is not None
            assert calls[0][0].function.name == "get_weather"
            arguments = "".join(tc[0].function.arguments or "" for tc in calls if tc[0].function is not None)
            assert set(json.loads(arguments)) == {"city"}
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
            assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
        with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as sdk:  # and natively
            assert (
                sdk.messages.create(
                    model="claude-sim", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
                ).usage.output_tokens
                == 5
            )
    finally:
        gateway.stop()
        sim.stop()


def test_failover_before_the_first_event_is_invisible(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One of two Messages backends answers every call with 503: the client never sees it."""
    tmp = tmp_path_factory.mktemp("messages-failover")
    broken = start_sim("--models", "native", "--error-rate", "1", "--error-status", "503", log_dir=tmp, name="broken")
    healthy = start_sim("--models", "native", "--output-tokens", "4", log_dir=tmp, name="healthy")
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "resilience": {"retries": 2, "backoff_base": 0.0},
        "backends": [
            sim_backend("broken", broken, models=["native"], apis=["chat", "messages"]),
            sim_backend("healthy", healthy, models=["native"], apis=["chat", "messages"]),
        ],
    }
    gateway = start_gateway(config, tmp)
    try:
        with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as sdk:
            for _ in range(4):
                with sdk.messages.stream(
                    model="native", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                ) as stream:
                    assert stream.get_final_message().usage.output_tokens == 4
        assert SimControl(broken).stats()["errors_injected"].get("error", 0) >= 1  # it was tried
    finally:
        gateway.stop()
        broken.stop()
        healthy.stop()
