"""The bundled SmolLM2 behind the gateway, through the libraries users point at it: instructor's JSON
mode gets its model back, a named tool call parses, and a cached system prompt answers exactly as a
cold one (greedy, over HTTP). One gateway for the module; each answer is kept short.

instructor runs in `Mode.JSON_SCHEMA` (its JSON mode that sends `response_format` json_schema): with
`Mode.JSON` (json_object) the answer is always one JSON object, but a 135M model does not copy the
fields from the schema instructor writes into the prompt, so validation fails on the model, not on
the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import instructor
import openai
import pytest
from pydantic import BaseModel

from tests.support.processes import ServerProcess
from tests.support.stack import start_engine_gateway

pytestmark = [pytest.mark.model, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("smollm2-surface")
    engine = {"devices": ["cpu"], "max_num_seqs": 4, "max_num_batched_tokens": 256, "max_model_len": 2048,
              "kv_cache_memory_mb": 256}
    gw = start_engine_gateway(tmp, MODEL, engine, timeout=400)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=300) as sdk:
        yield sdk


class City(BaseModel):
    name: str
    country: str


def test_instructor_json_mode_returns_its_model(client: openai.OpenAI) -> None:
    structured = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    city = structured.chat.completions.create(
        model=MODEL, response_model=City, max_retries=1, temperature=0, max_tokens=60,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
    )
    assert isinstance(city, City) and city.name and city.country


def test_a_named_tool_call_parses_against_its_schema(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "What is the weather in Paris today?"}],
        tools=[{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)  # type: ignore[union-attr]


def test_a_cached_system_prompt_answers_as_a_cold_one(gateway: ServerProcess, client: openai.OpenAI) -> None:
    system = "You are a concise assistant for a railway company. " * 12  # about 130 tokens, 8 full blocks
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "When does the last train leave?"}]
    kwargs = {"model": MODEL, "temperature": 0, "max_tokens": 24, "extra_body": {"ignore_eos": True}}
    cold = client.chat.completions.create(messages=messages, **kwargs)  # type: ignore[call-overload]
    hits_before = _hit_tokens(gateway)
    warm = client.chat.completions.create(messages=messages, **kwargs)  # type: ignore[call-overload]
    assert _hit_tokens(gateway) - hits_before >= 128  # the second one found the prompt's blocks cached
    assert warm.choices[0].message.content == cold.choices[0].message.content


def _hit_tokens(gateway: ServerProcess) -> float:
    from tests.support.stack import metric_value

    return metric_value(httpx.get(gateway.url + "/metrics").text, "switchyard_engine_prefix_cache_hits_tokens")
