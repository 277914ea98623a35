"""The Responses API through the gateway in front of a real vLLM server (its CPU build, the bundled
SmolLM2), driven by the official `openai` SDK: passed through natively (vLLM serves /v1/responses
and the gateway discovers it) and translated to chat (a backend declared `apis: [chat]`). With
greedy decoding the text equals what vLLM's own /v1/responses gives, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import start_gateway
from tests.support.vllm import GATEWAY_KEY, MODEL_NAME, VllmEndpoint

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def direct(vllm_server: VllmEndpoint) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def native(vllm_gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm_gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=120) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def translated(vllm_server: VllmEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "backends": [{"name": "vllm-chat", "base_url": vllm_server.base_url, "apis": ["chat", "completions"]}],
    }
    gateway = start_gateway(config, Path(tmp_path_factory.mktemp("vllm-translated")), timeout=120)
    try:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
            yield sdk
    finally:
        gateway.stop()


def _answer(client: openai.OpenAI, prompt: str, *, stream: bool) -> tuple[str, int, int]:
    request: Any = {"model": MODEL_NAME, "input": prompt, "temperature": 0, "max_output_tokens": MAX_TOKENS}
    if not stream:
        reply = client.responses.create(**request)
    else:
        with client.responses.stream(**request) as events:
            deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
            reply = events.get_final_response()
        assert "".join(deltas) == reply.output_text
    assert reply.usage is not None
    return reply.output_text, reply.usage.input_tokens, reply.usage.output_tokens


@pytest.mark.parametrize(
    ("stream", "prompt"),
    [(False, "Name two oceans."), (True, "What colour is the sky?")],
    ids=["plain", "streamed"],
)
def test_responses_passed_through_natively_equal_vllm(
    direct: openai.OpenAI, native: openai.OpenAI, stream: bool, prompt: str
) -> None:
    expected = _answer(direct, prompt, stream=False)
    assert expected[0] and expected[2] > 0
    assert _answer(native, prompt, stream=stream) == expected


def test_native_responses_are_vllms_own_and_stored(direct: openai.OpenAI, native: openai.OpenAI) -> None:
    raw = native.responses.with_raw_response.create(model=MODEL_NAME, input="Say one word.", max_output_tokens=4)
    body = raw.http_response.json()
    assert "kv_transfer_params" in body  # vLLM's own fields: the answer was passed through untouched
    assert native.responses.retrieve(body["id"]).output_text == raw.parse().output_text
    follow = native.responses.create(
        model=MODEL_NAME, input="Another word.", previous_response_id=body["id"], max_output_tokens=4, temperature=0
    )
    assert follow.output_text


@pytest.mark.parametrize(
    ("stream", "prompt"),
    [(False, "Name a large river."), (True, "What is two plus two?")],
    ids=["plain", "streamed"],
)
def test_responses_translated_to_chat_equal_vllm(
    direct: openai.OpenAI, translated: openai.OpenAI, stream: bool, prompt: str
) -> None:
    expected = _answer(direct, prompt, stream=False)
    assert _answer(translated, prompt, stream=stream) == expected
