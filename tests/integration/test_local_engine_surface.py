"""The engine's OpenAI surface over real HTTP with the `openai` SDK: structured outputs (hypothesis
over a family of JSON schemas), forced and named tool calls (streamed and not), logprobs, n, penalties,
stop token ids. A tiny random Llama keeps it fast: whatever it would say, the grammar decides what it
may say, so every answer must parse and validate; the bundled SmolLM2 is exercised in
tests/integration/test_local_engine_smollm2.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.support.processes import ServerProcess
from tests.support.stack import TINY_MODEL, start_engine_gateway, tiny_engine

MODEL = TINY_MODEL
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("engine-surface")
    engine = tiny_engine(tmp, max_num_seqs=8, max_num_batched_tokens=256)  # 2,048 positions: tools make long prompts
    gw = start_engine_gateway(tmp, MODEL, engine, timeout=180)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


# -- structured outputs --------------------------------------------------------------------------

# A family of schemas whose every instance is short, so a bounded answer always completes.
leaves = st.one_of(
    st.just({"type": "integer", "minimum": -50, "maximum": 50}),
    st.just({"type": "boolean"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 8)),
    st.builds(lambda values: {"enum": values}, st.lists(st.sampled_from(["a", "b", "c d", 1, 2.5, None]), min_size=1,
                                                        max_size=3, unique=True)),
)
schemas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda props, keep: {"type": "object", "properties": props, "required": sorted(props)[:keep],
                                       "additionalProperties": False},
                  st.dictionaries(st.sampled_from(["name", "age", "city", "tags", "ok"]), inner, min_size=1,
                                  max_size=3), st.integers(0, 3)),
        st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, inner, st.integers(1, 3)),
    ),
    max_leaves=5,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas, stream=st.booleans())
def test_json_schema_outputs_always_validate(client: openai.OpenAI, schema: dict[str, Any], stream: bool) -> None:
    wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"],
               "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": wrapped, "strict": True}}
    text = _complete(client, stream, response_format=fmt, max_tokens=400, temperature=0.7, seed=3)
    jsonschema.validate(json.loads(text), wrapped)


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_is_one_json_object(client: openai.OpenAI, stream: bool) -> None:
    text = _complete(client, stream, response_format={"type": "json_object"}, max_tokens=300, temperature=0)
    assert isinstance(json.loads(text), dict)


# -- tools ---------------------------------------------------------------------------------------

WEATHER: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                     "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "additionalProperties": False}}}
TIME: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
SCHEMAS: dict[str, Any] = {"get_weather": WEATHER["function"].get("parameters"),
                           "get_time": TIME["function"].get("parameters")}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}],
                         ids=["required", "named"])
def test_forced_tool_calls_parse_and_validate(client: openai.OpenAI, choice: Any) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME],
                                         tool_choice=choice, max_tokens=200, temperature=0)
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls" and message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    if isinstance(choice, dict):
        assert [c.function.name for c in message.tool_calls] == ["get_time"]  # type: ignore[union-attr]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}],
                         ids=["required", "named"])
def test_forced_tool_calls_stream_as_openai_deltas(client: openai.OpenAI, choice: Any) -> None:
    kwargs: dict[str, Any] = {"tools": [WEATHER, TIME], "tool_choice": choice, "max_tokens": 200, "temperature": 0}
    whole = client.chat.completions.create(model=MODEL, messages=ASK, **kwargs)
    chunks: list[Any] = list(client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **kwargs))
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            if delta_call.id is not None:  # a call opens with its id, type and name
                assert delta_call.index not in calls and delta_call.type == "function"
                assert delta_call.function is not None and delta_call.function.name
                calls[delta_call.index] = {"name": delta_call.function.name, "arguments": ""}
            assert delta_call.function is not None
            calls[delta_call.index]["arguments"] += delta_call.function.arguments or ""
    assert sorted(calls) == list(range(len(calls))) and calls
    assert [c.finish_reason for c in (ch.choices[0] for ch in chunks if ch.choices)][-1] == "tool_calls"
    expected = whole.choices[0].message.tool_calls or []
    got = [calls[i] for i in sorted(calls)]
    assert [(c["name"], json.loads(c["arguments"])) for c in got] == [
        (c.function.name, json.loads(c.function.arguments)) for c in expected
    ]
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.tool_calls]) > 2  # arguments in pieces


def test_tool_choice_none_offers_no_tools(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=0)
    none = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",
                                          max_tokens=8, temperature=0)
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert none.usage is not None and plain.usage is not None
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens


# -- the sampling surface ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_have_openais_shape(client: openai.OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = {"max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 3,
                              "extra_body": {"ignore_eos": True}}
    if stream:
        entries = [e for c in client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **kwargs)
                   if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    else:
        out = client.chat.completions.create(model=MODEL, messages=ASK, **kwargs)
        assert out.choices[0].logprobs is not None
        entries = out.choices[0].logprobs.content or []
    assert len(entries) == 6
    for entry in entries:
        assert entry.logprob <= 0 and isinstance(entry.bytes, list) and len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0], abs=1e-5)  # greedy: the chosen token is the top one
        assert entry.top_logprobs[0].token == entry.token


def test_completions_logprobs_have_the_legacy_shape(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=4, temperature=0, logprobs=2,
                                    extra_body={"ignore_eos": True})
    logprobs = out.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and len(logprobs.tokens) == 4
    assert logprobs.token_logprobs is not None and all(v <= 0 for v in logprobs.token_logprobs)
    assert logprobs.top_logprobs is not None and all(len(t) <= 2 for t in logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == out.choices[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_n_gives_n_choices(client: openai.OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = {"n": 2, "max_tokens": 8, "temperature": 1.0, "seed": 11,
                              "extra_body": {"ignore_eos": True}}
    if stream:
        texts = {0: "", 1: ""}
        finishes = {}
        for chunk in client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **kwargs):
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert finishes == {0: "length", 1: "length"}
    else:
        out = client.chat.completions.create(model=MODEL, messages=ASK, **kwargs)
        assert [c.index for c in out.choices] == [0, 1]
        assert out.usage is not None and out.usage.completion_tokens == 16
        texts = {c.index: c.message.content or "" for c in out.choices}
    assert texts[0] != texts[1]  # sampled with seeds of their own
    again = client.chat.completions.create(model=MODEL, messages=ASK, **kwargs)
    assert [c.message.content for c in again.choices] == [texts[0], texts[1]]  # and reproducible


def test_greedy_choices_are_the_same(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=10, temperature=0)
    assert len({c.message.content for c in out.choices}) == 1


def test_penalties_change_greedy_output(client: openai.OpenAI) -> None:
    base = {"max_tokens": 40, "temperature": 0, "extra_body": {"ignore_eos": True}}
    plain = _tokens(client, **base)
    penalised = _tokens(client, **base, frequency_penalty=2.0, presence_penalty=2.0)
    repeated = _tokens(client, max_tokens=40, temperature=0, extra_body={"ignore_eos": True, "repetition_penalty": 5})
    assert penalised != plain and repeated != plain
    assert len(set(penalised)) >= len(set(plain))  # repeating costs: more distinct tokens


def test_stop_token_ids_end_the_answer(client: openai.OpenAI) -> None:
    tokens = _tokens(client, max_tokens=20, temperature=0, extra_body={"ignore_eos": True,
                                                                       "return_tokens_as_token_ids": True})
    stop = int(tokens[3].removeprefix("token_id:"))
    out = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=20, temperature=0,
                                         extra_body={"ignore_eos": True, "stop_token_ids": [stop]})
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens == tokens.index(tokens[3]) + 1


def test_max_completion_tokens(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=3, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.usage is not None and out.usage.completion_tokens == 3 and out.choices[0].finish_reason == "length"


def _tokens(client: openai.OpenAI, **kwargs: Any) -> list[str]:
    out = client.chat.completions.create(model=MODEL, messages=ASK, logprobs=True, **kwargs)
    assert out.choices[0].logprobs is not None
    return [e.token for e in out.choices[0].logprobs.content or []]


def _complete(client: openai.OpenAI, stream: bool, **kwargs: Any) -> str:
    if not stream:
        out = client.chat.completions.create(model=MODEL, messages=ASK, **kwargs)
        assert out.choices[0].finish_reason == "stop"
        return out.choices[0].message.content or ""
    chunks: list[Any] = list(client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **kwargs))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
