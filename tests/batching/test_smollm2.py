"""The bundled SmolLM2-135M-Instruct through the pool: staggered concurrent chats decode greedily to
exactly what Hugging Face `generate` gives each alone. Loads the GGUF twice (about a minute)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from batching import EngineSettings, GenerationOutput, GenerationRequest, SamplingParams, WorkerPool
from batching.models import bundled_model_path
from tests.batching.conftest import hf_greedy

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

CHATS = [
    "What is the capital of France?",
    "Write a haiku about continuous batching in language model servers, then explain it briefly.",
    "List three prime numbers.",
]


def load_hf_model() -> Any:
    from transformers import AutoModelForCausalLM

    path = bundled_model_path("smollm2-135m-instruct")
    model: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[tuple[WorkerPool, Any]]:
    """The pool and the reference model, loaded side by side."""
    pool = WorkerPool(EngineSettings(max_num_seqs=4, max_num_batched_tokens=64, max_model_len=1024,
                                     kv_cache_memory_mb=256))
    reference = asyncio.ensure_future(asyncio.to_thread(load_hf_model))
    try:
        await pool.start()
        yield pool, await reference
    finally:
        await pool.aclose()


async def collect(pool: WorkerPool, request: GenerationRequest, first: asyncio.Event) -> list[GenerationOutput]:
    outputs = []
    async for out in pool.generate(request):
        outputs.append(out)
        first.set()
    return outputs


async def test_staggered_chats_match_generate_alone(served: tuple[WorkerPool, Any]) -> None:
    pool, hf_model = served
    assert pool.model_name == "smollm2-135m-instruct"
    prompts = [pool.render_chat([{"role": "user", "content": c}]) for c in CHATS]
    assert len({len(p) for p in prompts}) == len(prompts)
    tasks = []
    for prompt in prompts:  # each starts once the previous one streams: prefill beside decodes
        started = asyncio.Event()
        request = GenerationRequest(prompt, SamplingParams(temperature=0.0, max_tokens=20))
        tasks.append(asyncio.create_task(collect(pool, request, started)))
        await started.wait()
    texts = []
    for prompt, outputs in zip(prompts, await asyncio.gather(*tasks), strict=True):
        expected = hf_greedy(hf_model, prompt, 20)
        assert [t for o in outputs for t in o.token_ids] == expected
        texts.append("".join(o.text for o in outputs))
        assert texts[-1] == pool.decode(expected)
    assert "Paris" in texts[0]
