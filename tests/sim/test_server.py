"""The sim over real HTTP, driven by the official `openai` SDK (as the gateway's tests will use it)."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import ServerProcess, free_port

MODEL = "sim-model"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "the time in a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
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
        f"{MODEL},other-model",
        "--output-tokens",
        "8",
        "--seed",
        "7",
    ]
    with ServerProcess(args, port) as server:
        yield server


@pytest.fixture
def client(sim: ServerProcess) -> Iterator[openai.OpenAI]:
    httpx.post(sim.url + "/sim/reset")
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def stats(sim: ServerProcess) -> dict[str, Any]:
    return dict(httpx.get(sim.url + "/sim/stats").json())


def test_models_lists_configured_models(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["other-model", MODEL]


def test_plain_chat_has_text_usage_and_echoed_request_id(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-request-id": "r-1"},
    )
    assert raw.headers["x-request-id"] == "r-1"
    resp = raw.parse()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content and len(resp.choices[0].message.content.split()) == 8
    assert resp.usage is not None and resp.usage.completion_tokens == 8


def test_same_prompt_gives_same_text(client: openai.OpenAI) -> None:
    texts = {
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "same"}])
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(texts) == 1


def test_max_tokens_truncates_with_finish_length(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


def test_stream_with_include_usage_ends_with_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"sim": {"output_tokens": 5}},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_tool_call_plain_picks_best_matching_tool(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "what is the weather in Paris?"}],
        tools=[CLOCK, WEATHER],
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)


def test_tool_choice_names_the_tool(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "what is the weather in Paris?"}],
        tools=[CLOCK, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = resp.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function" and calls[0].function.name == "get_time"


def test_tool_choice_none_answers_with_text(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], tool_choice="none"
    )
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.tool_calls is None


def test_streamed_tool_call_deltas_have_openai_shape(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "weather in Oslo"}],
            tools=[CLOCK, WEATHER],
            stream=True,
            extra_body={"sim": {"output_tokens": 6}},
        )
    )
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather"
    assert len(rest) == 5
    assert all(d.index == 0 and d.id is None and d.function is not None and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function is not None)
    assert json.loads(arguments)["city"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_completions_plain_and_stream(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt="once upon", max_tokens=4)
    assert resp.choices[0].finish_reason == "length" and len(resp.choices[0].text.split()) == 4
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="once upon", max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == resp.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_embeddings_float_and_base64_agree(client: openai.OpenAI, sim: ServerProcess) -> None:
    floats = client.embeddings.create(model=MODEL, input=["alpha", "beta"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [384, 384]
    assert abs(sum(x * x for x in floats.data[0].embedding) - 1.0) < 1e-4
    # The SDK asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model=MODEL, input=["alpha", "beta"])
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.data[0].embedding != floats.data[1].embedding
    raw = httpx.post(
        sim.url + "/v1/embeddings",
        json={"model": MODEL, "input": "alpha", "encoding_format": "base64", "dimensions": 8},
    ).json()
    vector = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert len(vector) == 8


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_injected_error_raises_matching_sdk_exception(
    client: openai.OpenAI, sim: ServerProcess, status: int, exc: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"sim": {"fault": "error", "status": status}},
        )
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == status
    if status == 429:
        assert info.value.response.headers["retry-after"] == "1"
    assert stats(sim)["errors_injected"] == {"error": 1}


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def _transport_errors() -> tuple[type[Exception], ...]:
    """What the SDK raises when a stream breaks: its own error, or its HTTP client's (httpx before
    openai 3, httpx2 since)."""
    errors: list[type[Exception]] = [openai.APIError, httpx.HTTPError]
    try:
        import httpx2
    except ImportError:
        return tuple(errors)
    return (*errors, httpx2.HTTPError)


def test_disconnect_mid_stream_breaks_the_stream(client: openai.OpenAI) -> None:
    got: list[str] = []
    with pytest.raises(_transport_errors()):
        for c in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"sim": {"fault": "disconnect", "after_chunks": 3}},
        ):
            got.extend(c.choices[0].delta.content or "" for _ in [0] if c.choices)
    assert len("".join(got).split()) == 3


def test_malformed_json_body_fails_to_parse(client: openai.OpenAI) -> None:
    with pytest.raises(ValueError):  # the SDK lets json.JSONDecodeError through
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"sim": {"fault": "malformed_json"}},
        )


def test_malformed_sse_breaks_one_event(sim: ServerProcess) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "sim": {"fault": "malformed_sse", "after_chunks": 1, "output_tokens": 3},
    }
    text = httpx.post(sim.url + "/v1/chat/completions", json=body).text
    events = [e for e in text.split("\n\n") if e]
    assert any(e.count("data: ") == 2 for e in events)  # two data lines ran into one event


def test_hang_then_client_timeout_is_recorded_as_cancellation(sim: ServerProcess) -> None:
    httpx.post(sim.url + "/sim/reset")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "sim": {"fault": "hang"}}
    before = time.time()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim.url + "/v1/chat/completions", json=body, headers={"x-request-id": "hung-1"}, timeout=0.3)
    deadline = time.monotonic() + 5
    while not stats(sim)["cancellations"] and time.monotonic() < deadline:
        time.sleep(0.02)  # polling another process's state
    cancel = stats(sim)["cancellations"][0]
    assert cancel["request_id"] == "hung-1" and cancel["phase"] == "before_first_token"
    assert before + 0.25 < cancel["time"] < time.time()
    assert stats(sim)["in_flight"] == 0


def test_disconnect_while_streaming_is_recorded(sim: ServerProcess) -> None:
    httpx.post(sim.url + "/sim/reset")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "sim": {"itl_ms": 50, "output_tokens": 100},
    }
    with httpx.stream("POST", sim.url + "/v1/chat/completions", json=body, headers={"x-request-id": "left-1"}) as resp:
        lines = resp.iter_lines()
        while "content" not in next(lines):
            pass
        left = time.time()
    deadline = time.monotonic() + 5
    while not stats(sim)["cancellations"] and time.monotonic() < deadline:
        time.sleep(0.02)  # polling another process's state
    cancel = stats(sim)["cancellations"][0]
    assert cancel["request_id"] == "left-1" and cancel["phase"] == "streaming"
    assert 1 <= cancel["chunks_sent"] < 100
    assert left - 0.01 < cancel["time"] < left + 1.0


def test_stats_keep_forwarded_headers_and_body(client: openai.OpenAI, sim: ServerProcess) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-tenant": "t1"},
        extra_body={"custom_field": 3},
    )
    s = stats(sim)
    assert s["requests"] == {"/v1/chat/completions": 1} and s["completed"] == 1
    last = s["recent"][-1]
    assert last["headers"]["x-tenant"] == "t1" and last["body"]["custom_field"] == 3


def test_live_config_changes_behaviour(sim: ServerProcess, client: openai.OpenAI) -> None:
    try:
        r = httpx.post(sim.url + "/sim/config", json={"output_tokens": {"kind": "fixed", "value": 2}})
        assert r.status_code == 200 and r.json()["output_tokens"]["value"] == 2
        resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert resp.usage is not None and resp.usage.completion_tokens == 2
        bad = httpx.post(sim.url + "/sim/config", json={"faults": {"error": 2}})
        assert bad.status_code == 400 and "faults.error" in bad.json()["error"]["message"]
    finally:
        httpx.post(sim.url + "/sim/config", json={"output_tokens": {"kind": "fixed", "value": 8}})


def test_invalid_json_body_is_400(sim: ServerProcess) -> None:
    r = httpx.post(sim.url + "/v1/chat/completions", content=b"{nope", headers={"x-request-id": "bad"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "bad"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_slow_stream_paces_tokens(sim: ServerProcess, client: openai.OpenAI) -> None:
    httpx.post(sim.url + "/sim/config", json={"slow_itl_ms": 40})
    try:
        start = time.monotonic()
        arrivals = []
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"sim": {"fault": "slow", "output_tokens": 4}},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - start)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(gaps) == 3 and all(0.035 <= g <= 0.2 for g in gaps)
        assert stats(sim)["errors_injected"] == {"slow": 1}
    finally:
        httpx.post(sim.url + "/sim/config", json={"slow_itl_ms": 1000})
