"""The built-in engine behind the gateway: OpenAI parameters mapped or refused by name, streaming,
usage, cancellation that frees the engine's slot. A tiny random Llama keeps this fast; the bundled
SmolLM2 is exercised by the embedded-default test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import TINY_MODEL, metric_value, start_engine_gateway, tiny_engine

MODEL = TINY_MODEL


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("local-engine")
    gw = start_engine_gateway(tmp, MODEL, tiny_engine(tmp), timeout=180)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def client(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def _ask(client: openai.OpenAI, **kw: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello there"}], **kw)


def test_plain_answer_with_usage(client: openai.OpenAI) -> None:
    out = _ask(client, max_tokens=6, temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage is not None and 1 <= out.usage.completion_tokens <= 6 and out.usage.prompt_tokens > 0


def test_greedy_is_deterministic_and_streaming_matches(client: openai.OpenAI) -> None:
    plain = _ask(client, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    chunks = list(
        _ask(
            client,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    a = _ask(client, max_tokens=10, temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    b = _ask(client, max_tokens=10, temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert a.choices[0].message.content == b.choices[0].message.content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 17}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"best_of": 3}, "best_of"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nosuchtype"}}}],
          "tool_choice": "required"}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
          "function": {"name": "g"}}}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True,
          "schema": {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}}}},
         "response_format"),
        ({"vendor_knob": 1}, "vendor_knob"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, max_tokens=4, extra_body=extra)
    assert err.value.param == param


def test_legacy_completion(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=5, temperature=0)
    assert out.choices[0].text is not None and out.usage is not None and out.usage.completion_tokens <= 5


def test_prompt_over_the_context_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "fox " * 2100}])


def test_client_disconnect_frees_the_engine_slot(gateway: ServerProcess) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 1900,  # seconds of work even for this tiny model
        "ignore_eos": True,
        "messages": [{"role": "user", "content": "Tell me everything"}],
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        assert _engine(gateway)["in_flight"] == 1
    deadline = time.monotonic() + 5
    while _engine(gateway)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the engine's reported state, bounded
    assert _engine(gateway)["in_flight"] == 0
    text = httpx.get(gateway.url + "/metrics").text
    assert metric_value(text, "switchyard_client_cancellations_total") >= 1
    assert "switchyard_engine_" in text


def _engine(gateway: ServerProcess) -> dict[str, Any]:
    return httpx.get(gateway.url + "/readyz").json()["engine:local"]["workers"][0]  # type: ignore[no-any-return]
