"""POST /v1/messages through the gateway in front of a real vLLM server (its CPU build, the bundled
SmolLM2), driven by the official `anthropic` SDK: with greedy decoding the text equals what vLLM's
own /v1/messages gives, plain and streamed, whether the gateway passes the request through (the
backend declares the Messages API) or translates it to chat completions (a backend declared
chat-only, reached under another model name)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from gateway.auth import hash_key
from tests.support.processes import ServerProcess
from tests.support.stack import start_gateway
from tests.support.vllm import MODEL_NAME, VllmEndpoint

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

KEY = "sk-vllm-messages"
TRANSLATED = "smollm2-via-chat"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def gateway(vllm_server: VllmEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("vllm-messages")
    config = {
        "auth": {"keys": [{"sha256": hash_key(KEY), "tenant": "t"}]},
        "cache": {"enabled": False},
        "backends": [
            {
                "name": "vllm-native",
                "base_url": vllm_server.base_url,
                "models": [MODEL_NAME],
                "apis": ["chat", "completions", "messages"],
            },
            {
                "name": "vllm-chat",
                "base_url": vllm_server.base_url,
                "models": [TRANSLATED],
                "aliases": {TRANSLATED: MODEL_NAME},
                "apis": ["chat"],
            },
        ],
    }
    server = start_gateway(config, tmp, timeout=120)
    try:
        yield server
    finally:
        server.stop()


def _ask(client: anthropic.Anthropic, model: str, prompt: str, stream: bool) -> tuple[str, str | None, int]:
    asked: Any = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "extra_body": {"temperature": 0},  # not a parameter of this SDK release
        "system": "You are terse.",
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        with client.messages.stream(**asked) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**asked)
    text = "".join(b.text for b in message.content if b.type == "text")
    return text, message.stop_reason, message.usage.output_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", [MODEL_NAME, TRANSLATED], ids=["native", "translated"])
def test_greedy_text_equals_vllms_own(
    vllm_server: VllmEndpoint, gateway: ServerProcess, model: str, stream: bool
) -> None:
    prompt = f"Name one colour ({model}, {'streamed' if stream else 'plain'})."
    with (
        anthropic.Anthropic(base_url=vllm_server.url, api_key="unused", max_retries=0, timeout=120) as direct,
        anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=120) as through,
    ):
        expected = _ask(direct, MODEL_NAME, prompt, stream)
        got = _ask(through, model, prompt, stream)
    assert expected[0]  # vLLM said something
    assert got == expected
