"""The OpenAI surface through a real gateway process in front of real `switchyard sim` processes,
driven by the official `openai` SDK over HTTP."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

from gateway.auth import hash_key
from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, sim_backend, start_gateway, start_sim

CLIENT_KEY = "sk-client-alpha"
LIMITED_KEY = "sk-client-limited"
UPSTREAM_SECRET = "sk-upstream-very-secret-value"

Stack = tuple[ServerProcess, SimControl]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("surface")
    sim = start_sim("--models", "sim-model,embed-model", "--output-tokens", "12", "--itl-ms", "1", log_dir=tmp)
    config = {
        "auth": {
            "keys": [
                {"sha256": hash_key(CLIENT_KEY), "tenant": "alpha"},
                {"sha256": hash_key(LIMITED_KEY), "tenant": "beta", "models": ["embed-model"]},
            ]
        },
        "server": {"max_body_bytes": 64 * 1024},
        "backends": [
            sim_backend(
                "sim-a",
                sim,
                models=["sim-model", "embed-model"],
                aliases={"fast": "sim-model"},
                api_key_env="SIM_UPSTREAM_KEY",
            )
        ],
    }
    gateway = start_gateway(config, tmp, env={"SIM_UPSTREAM_KEY": UPSTREAM_SECRET})
    try:
        yield gateway, SimControl(sim)
    finally:
        gateway.stop()
        sim.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    gateway, _ = stack
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as sdk:
        yield sdk


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"sim-model", "embed-model", "fast"}


def test_plain_chat_completion(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=[{"role": "user", "content": "Say something"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    assert raw.headers["x-request-id"]


def test_request_id_is_taken_from_the_client_and_forwarded(client: openai.OpenAI, stack: Stack) -> None:
    _, sim = stack
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "trace-42"}
    )
    assert raw.headers["x-request-id"] == "trace-42"
    assert sim.last_request()["headers"]["x-request-id"] == "trace-42"


def test_streaming_chat_completion(client: openai.OpenAI, stack: Stack) -> None:
    _, sim = stack
    chunks = list(
        client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "Stream please"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The gateway asked for usage on its own behalf and stripped the usage chunk before the client saw it.
    assert all(c.usage is None for c in chunks)
    assert sim.last_request()["body"]["stream_options"] == {"include_usage": True}


def test_streaming_with_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_alias_is_rewritten_to_the_upstream_model(client: openai.OpenAI, stack: Stack) -> None:
    _, sim = stack
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert sim.last_request()["body"]["model"] == "sim-model"


TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Send an email",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
        },
    },
]


def test_tool_call_deltas_pass_through_intact(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-model",
        messages=[{"role": "user", "content": "What's the weather in Oslo?"}],
        tools=TOOLS,
        stream=True,
        extra_body={"sim": {"tool": "get_weather"}},
    )
    name, fragments, finish = "", [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or ():
            name += call.function.name or "" if call.function else ""
            if call.function and call.function.arguments:
                fragments.append(call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert len(fragments) > 1  # arguments arrive in pieces, as from OpenAI
    assert isinstance(json.loads("".join(fragments)), dict)
    assert finish == "tool_calls"


def test_unknown_fields_pass_through_untouched(client: openai.OpenAI, stack: Stack) -> None:
    _, sim = stack
    vendor = {"nested": [1, 2.5, {"x": None}], "flag": True}
    client.chat.completions.create(
        model="sim-model", messages=[{"role": "user", "content": "hi"}], extra_body={"vendor_extension": vendor}
    )
    assert sim.last_request()["body"]["vendor_extension"] == vendor


def test_keys_are_never_crossed(client: openai.OpenAI, stack: Stack) -> None:
    _, sim = stack
    client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}])
    seen = sim.last_request()["headers"]
    assert seen["authorization"] == f"Bearer {UPSTREAM_SECRET}"  # the upstream's key goes upstream
    assert CLIENT_KEY not in str(seen)  # the client's key never does


def test_upstream_key_never_reaches_a_client(stack: Stack) -> None:
    gateway, sim = stack
    sim.configure(faults={"error": 1.0}, error_status=401)
    try:
        resp = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    finally:
        sim.configure(faults={"error": 0.0}, error_status=500)
    assert resp.status_code == 502
    assert UPSTREAM_SECRET not in resp.text
    assert resp.json()["error"]["type"] == "upstream_error"


def _floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_in_both_encodings(client: openai.OpenAI, stack: Stack) -> None:
    gateway, _ = stack
    as_float = client.embeddings.create(model="embed-model", input=["alpha", "beta"], encoding_format="float")
    default = client.embeddings.create(model="embed-model", input=["alpha", "beta"])  # the SDK asks for base64
    assert len(as_float.data) == 2
    for a, b in zip(as_float.data, default.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    raw = httpx.post(
        gateway.url + "/v1/embeddings",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "embed-model", "input": "alpha", "encoding_format": "base64"},
    ).json()
    assert _floats(raw["data"][0]["embedding"]) == pytest.approx(as_float.data[0].embedding, rel=1e-6)


def test_legacy_completions(client: openai.OpenAI) -> None:
    out = client.completions.create(model="sim-model", prompt="Once upon a time", max_tokens=5)
    assert out.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="sim-model", prompt="Once", max_tokens=5, stream=True)
        if c.choices
    )
    assert len(streamed.split()) == 5


# -- errors: each status raises the SDK's matching exception class ------------------------------


def test_400_names_the_bad_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x"}], temperature=7)
    assert err.value.param == "temperature"
    assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_400_invalid_json(stack: Stack) -> None:
    gateway, _ = stack
    resp = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_400_missing_messages(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="sim-model", messages=[])
    assert err.value.param == "messages"


def test_401_without_or_with_a_wrong_key(stack: Stack) -> None:
    gateway, _ = stack
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x"}])
    resp = httpx.get(gateway.url + "/v1/models")
    assert resp.status_code == 401


def test_403_for_a_model_the_key_may_not_use(stack: Stack) -> None:
    gateway, _ = stack
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=LIMITED_KEY, max_retries=0) as limited,
        pytest.raises(openai.PermissionDeniedError),
    ):
        limited.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x"}])


def test_404_unknown_model_lists_the_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "sim-model" in err.value.message and err.value.code == "model_not_found"


def test_413_body_over_the_limit(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x" * 100_000}])
    assert err.value.status_code == 413


def test_502_upstream_error_and_no_stack_trace(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sim": {"fault": "error", "status": 500}},
        )
    assert err.value.status_code == 502
    assert "Traceback" not in str(err.value.body)


def test_upstream_4xx_is_passed_on(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sim": {"fault": "error", "status": 422}},
        )


def test_health_and_readiness(stack: Stack) -> None:
    gateway, _ = stack
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["ready"] is True and ready["backends"]["sim-a"]["healthy"] is True


def test_metrics_are_exported(client: openai.OpenAI, stack: Stack) -> None:
    gateway, _ = stack
    client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(gateway.url + "/metrics").text
    for name in (
        "switchyard_requests_total",
        "switchyard_requests_in_flight",
        "switchyard_request_duration_seconds",
        "switchyard_gateway_overhead_seconds",
        "switchyard_tokens_total",
        "switchyard_circuit_state",
    ):
        assert name in text
    assert CLIENT_KEY not in text and "alpha" not in text  # no keys or tenants as labels


def test_openapi_describes_the_request_bodies(stack: Stack) -> None:
    gateway, _ = stack
    spec = httpx.get(gateway.url + "/openapi.json").json()
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in body["properties"]
