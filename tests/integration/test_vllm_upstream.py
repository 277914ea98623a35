"""The gateway in front of a real vLLM server (its CPU build, the bundled SmolLM2), driven by the
official `openai` SDK over HTTP: greedy text through the gateway equals vLLM's own, streamed or not,
usage is passed on, and bad requests get OpenAI's error shape.

The server is shared by the session and slow on a small CPU: a handful of short requests, each with
its own prompt so that none can be answered from the gateway's response cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.support.processes import ServerProcess
from tests.support.vllm import GATEWAY_KEY, MODEL_NAME, VllmEndpoint

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_TOKENS = 12


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@pytest.fixture(scope="module")
def direct(vllm_server: VllmEndpoint) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def gateway(vllm_gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm_gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=120) as sdk:
        yield sdk


def _chat(client: openai.OpenAI, prompt: str, *, stream: bool) -> Answer:
    return _ask(client.chat.completions, stream, messages=[{"role": "user", "content": prompt}])


def _completion(client: openai.OpenAI, prompt: str, *, stream: bool) -> Answer:
    return _ask(client.completions, stream, prompt=prompt)


def _text(choice: Any) -> str:
    """A choice's text in either API, whole or streamed: chat `message`/`delta`, or `text`."""
    if hasattr(choice, "text"):
        return str(choice.text)
    return str((choice.delta if hasattr(choice, "delta") else choice.message).content or "")


def _ask(resource: Any, stream: bool, **request: Any) -> Answer:
    """One greedy request on `resource` (the SDK's `chat.completions` or `completions`), checked to be
    answered by the backend (not replayed from the gateway's cache), with its usage."""
    request.update(model=MODEL_NAME, temperature=0, max_tokens=MAX_TOKENS)
    if not stream:
        raw = resource.with_raw_response.create(**request)
        assert raw.headers.get("x-switchyard-cache") in (None, "miss")
        reply = raw.parse()
        assert reply.usage is not None
        choice = reply.choices[0]
        return Answer(_text(choice), choice.finish_reason, reply.usage.prompt_tokens, reply.usage.completion_tokens)
    parts: list[str] = []
    finish: str | None = None
    usage = None
    with resource.create(**request, stream=True, stream_options={"include_usage": True}) as chunks:
        assert chunks.response.headers.get("x-switchyard-cache") in (None, "miss")
        for chunk in chunks:
            for choice in chunk.choices:
                parts.append(_text(choice))
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
    assert usage is not None, "the usage chunk (stream_options.include_usage) was not passed on"
    return Answer("".join(parts), finish, usage.prompt_tokens, usage.completion_tokens)


def test_the_gateway_discovers_the_vllm_model(gateway: openai.OpenAI) -> None:
    assert MODEL_NAME in [m.id for m in gateway.models.list()]


@pytest.mark.parametrize(
    ("stream", "prompt"),
    [(False, "Name three primary colours."), (True, "What is the capital of Italy?")],
    ids=["plain", "streamed"],
)
def test_chat_through_the_gateway_equals_vllm(
    direct: openai.OpenAI, gateway: openai.OpenAI, stream: bool, prompt: str
) -> None:
    expected = _chat(direct, prompt, stream=False)
    assert expected.text and expected.completion_tokens > 0
    assert _chat(gateway, prompt, stream=stream) == expected


@pytest.mark.parametrize(
    ("stream", "prompt"),
    [(False, "The three largest planets are"), (True, "A recipe for bread starts with")],
    ids=["plain", "streamed"],
)
def test_completion_through_the_gateway_equals_vllm(
    direct: openai.OpenAI, gateway: openai.OpenAI, stream: bool, prompt: str
) -> None:
    expected = _completion(direct, prompt, stream=False)
    assert expected.text and expected.completion_tokens == MAX_TOKENS and expected.finish_reason == "length"
    assert _completion(gateway, prompt, stream=stream) == expected


def _error_body(exc: openai.APIStatusError) -> dict[str, object]:
    body = exc.response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


def test_an_unknown_model_gets_the_openai_error_shape(gateway: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    error = _error_body(caught.value)
    assert error["code"] == "model_not_found"
    assert "no-such-model" in str(error["message"])


def test_a_request_vllm_rejects_comes_back_as_an_openai_error(direct: openai.OpenAI, gateway: openai.OpenAI) -> None:
    """More output than the model's context holds: vLLM refuses it; the client sees a 400 in OpenAI's
    shape through the gateway too, and the gateway keeps serving."""
    too_many = 10**6
    with pytest.raises(openai.BadRequestError) as from_vllm:
        direct.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=too_many)
    with pytest.raises(openai.BadRequestError) as through:
        gateway.completions.create(model=MODEL_NAME, prompt="Hello", max_tokens=too_many)
    _error_body(from_vllm.value)
    error = _error_body(through.value)
    assert "max_tokens" in str(error["message"]) or error["param"] == "max_tokens", error
    assert gateway.models.list().data
