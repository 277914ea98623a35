"""The bundled SmolLM2-135M-Instruct through the pool: staggered concurrent chats decode greedily to
exactly what Hugging Face `generate` gives each alone. Loads the GGUF twice (about a minute)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from batching import EngineSettings, GenerationOutput, GenerationRequest, SamplingParams, WorkerPool
from batching.devices import cpu_flags, default_cpu_dtype
from batching.models import bundled_model_path
from tests.batching.conftest import REFERENCE_DTYPE, hf_greedy

# What the engine's default ("auto") runs in on this CPU: bfloat16 where it computes it natively.
AUTO_DTYPE = default_cpu_dtype(cpu_flags(Path("/proc/cpuinfo").read_text()))[0]

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
    pool = WorkerPool(EngineSettings(dtype=REFERENCE_DTYPE, max_num_seqs=4, max_num_batched_tokens=64,
                                     max_model_len=1024, kv_cache_memory_mb=256))
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


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.skipif(AUTO_DTYPE == "float32", reason="the default is float32 on this CPU: the test above is it")
async def test_the_default_bfloat16_answers_as_float32_does(served: tuple[WorkerPool, Any]) -> None:
    """bfloat16 is not bit for bit float32: greedy paths part once two logits are closer than its
    precision. It must still give the same answers, and the same opening tokens."""
    _, hf_model = served
    pool = WorkerPool(EngineSettings(max_num_seqs=4, max_model_len=1024, kv_cache_memory_mb=256))
    await pool.start()
    try:
        assert pool.stats()["workers"][0]["dtype"] == "bfloat16"
        agreed, texts = [], []
        for chat in CHATS:
            prompt = pool.render_chat([{"role": "user", "content": chat}])
            request = GenerationRequest(prompt, SamplingParams(temperature=0.0, max_tokens=20))
            got = [t for o in await collect(pool, request, asyncio.Event()) for t in o.token_ids]
            expected = hf_greedy(hf_model, prompt, 20)
            agreed.append(common_prefix(got, expected))
            texts.append(pool.decode(got))
    finally:
        await pool.aclose()
    print("bfloat16 agrees with float32 for the first", agreed, "tokens")
    assert "Paris" in texts[0]
    assert min(agreed) >= 5, agreed
