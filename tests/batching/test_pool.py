"""The pool with real worker processes serving a tiny random Llama: streaming, correctness against
Hugging Face `generate`, stop strings, cancellation, overload and invalid requests, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from batching import (
    EngineOverloaded,
    EngineSettings,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    SamplingParams,
    WorkerPool,
)
from tests.batching.conftest import REFERENCE_DTYPE, hf_greedy


def process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model.eval()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tiny_model_dir: Path) -> AsyncIterator[WorkerPool]:
    settings = EngineSettings(model=str(tiny_model_dir), devices=["cpu"], dtype=REFERENCE_DTYPE, max_num_seqs=4,
                              max_num_batched_tokens=32, max_model_len=256, block_size=4, kv_cache_memory_mb=8)
    pool = WorkerPool(settings)
    await pool.start()
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_slot_pool(tiny_model_dir: Path) -> AsyncIterator[WorkerPool]:
    settings = EngineSettings(model=str(tiny_model_dir), devices=["cpu"], dtype=REFERENCE_DTYPE, max_num_seqs=1,
                              max_queue=1, max_model_len=512, kv_cache_memory_mb=8)
    pool = WorkerPool(settings)
    await pool.start()
    yield pool
    await pool.aclose()


async def collect(pool: WorkerPool, request: GenerationRequest,
                  first: asyncio.Event | None = None) -> list[GenerationOutput]:
    outputs = []
    async for out in pool.generate(request):
        outputs.append(out)
        if first is not None:
            first.set()
    return outputs


def ids_of(outputs: list[GenerationOutput]) -> list[int]:
    return [t for o in outputs for t in o.token_ids]


async def test_start_makes_the_pool_ready(pool: WorkerPool) -> None:
    stats = pool.stats()
    assert pool.ready and pool.load_seconds > 0 and stats["ready"]
    worker = stats["workers"][0]
    assert worker["state"] == "ready" and worker["device"] == "cpu" and worker["kv_blocks"] > 0
    assert worker["max_model_len"] == 256 and worker["dtype"] == REFERENCE_DTYPE
    # ps and top name the worker (Linux), so an operator tells it from the gateway at a glance
    assert process_name(worker["pid"]) == "sy-engine"


async def test_staggered_concurrent_requests_match_generate_alone(pool: WorkerPool, hf_model: Any) -> None:
    rng = random.Random(0)
    chats = ["Hi", "Café, naïve, façade — 東京 and 北京 🙂", "def add(a, b):\n    return a + b\n" * 3]
    batch = [pool.render_chat([{"role": "user", "content": c}]) for c in chats]
    batch += [[rng.randrange(4, 400) for _ in range(n)] for n in (1, 90, 33)]
    max_tokens = [24, 40, 10, 30, 16, 48]
    # Each request starts once the previous one has streamed its first token: arrivals are staggered
    # and every later prompt is prefilled while earlier ones decode.
    tasks: list[asyncio.Task[list[GenerationOutput]]] = []
    for prompt, m in zip(batch, max_tokens, strict=True):
        started = asyncio.Event()
        request = GenerationRequest(prompt, SamplingParams(temperature=0.0, max_tokens=m))
        tasks.append(asyncio.create_task(collect(pool, request, started)))
        await started.wait()
    results = await asyncio.gather(*tasks)
    for prompt, m, outputs in zip(batch, max_tokens, results, strict=True):
        expected = hf_greedy(hf_model, prompt, m)
        assert ids_of(outputs) == expected
        last = outputs[-1]
        assert last.finish_reason == ("stop" if len(expected) < m else "length")
        assert all(o.finish_reason is None for o in outputs[:-1])
        assert (last.prompt_tokens, last.completion_tokens) == (len(prompt), len(expected))
        assert "".join(o.text for o in outputs) == pool.decode(expected)


async def test_a_stop_string_ends_the_stream_before_it(pool: WorkerPool) -> None:
    prompt = pool.encode("The quick brown fox")
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    full = "".join(o.text for o in await collect(pool, GenerationRequest(prompt, params)))
    stop = next(full[i:i + 3] for i in range(4, len(full) - 3) if full.find(full[i:i + 3]) == i)
    outputs = await collect(pool, GenerationRequest(prompt, SamplingParams(
        temperature=0.0, max_tokens=40, ignore_eos=True, stop=[stop])))
    assert "".join(o.text for o in outputs) == full[: full.find(stop)]
    assert outputs[-1].finish_reason == "stop" and outputs[-1].completion_tokens < 40


async def test_invalid_requests_name_the_problem(pool: WorkerPool) -> None:
    cases = [([1] * 256, "max_model_len"), ([], "empty"), ([5, 400], "outside the vocabulary")]
    for prompt, message in cases:
        with pytest.raises(InvalidRequest, match=message) as info:
            await collect(pool, GenerationRequest(prompt))
        assert info.value.param == "prompt"
    assert pool.stats()["workers"][0]["in_flight"] == 0


async def test_chat_template_and_encoding(pool: WorkerPool) -> None:
    ids = pool.render_chat([{"role": "user", "content": "Hi"}])
    assert pool.decode(ids) == "user\nHi\nassistant\n"  # special tokens are skipped when decoding
    assert ids[-len(pool.encode("assistant\n")):] == pool.encode("assistant\n")


async def test_cancelling_the_consumer_releases_the_request(pool: WorkerPool) -> None:
    first = asyncio.Event()
    request = GenerationRequest([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True))
    task = asyncio.create_task(collect(pool, request, first))
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats()["workers"][0]["in_flight"] == 0


async def test_metrics_are_exported(pool: WorkerPool) -> None:
    labels = {"model": pool.model_name}
    worker = {**labels, "worker": "0"}
    assert (REGISTRY.get_sample_value("switchyard_engine_generation_tokens_total", labels) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_prompt_tokens_total", labels) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_time_to_first_token_seconds_count", labels) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_inter_token_latency_seconds_count", labels) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_iteration_tokens_count", worker) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_queue_time_seconds_count", worker) or 0) > 0
    assert (REGISTRY.get_sample_value("switchyard_engine_model_load_seconds", worker) or 0) > 0
    assert REGISTRY.get_sample_value("switchyard_engine_kv_cache_usage_ratio", worker) is not None
    assert REGISTRY.get_sample_value("switchyard_engine_requests_running", worker) is not None
    assert (REGISTRY.get_sample_value("switchyard_engine_requests_rejected_total",
                                      {**labels, "reason": "invalid"}) or 0) >= 3
    assert (REGISTRY.get_sample_value("switchyard_engine_requests_finished_total",
                                      {**labels, "reason": "cancelled"}) or 0) >= 1


async def test_breaking_out_frees_the_only_slot(one_slot_pool: WorkerPool) -> None:
    long = GenerationRequest([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True))
    async with contextlib.aclosing(one_slot_pool.generate(long)) as stream:
        async for _ in stream:
            break
    # With one slot, this can only finish if the abandoned sequence was aborted in the worker.
    short = GenerationRequest([8, 9], SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True))
    outputs = await asyncio.wait_for(collect(one_slot_pool, short), timeout=60)
    assert outputs[-1].completion_tokens == 3


async def test_full_queues_refuse_with_overloaded(one_slot_pool: WorkerPool) -> None:
    long = GenerationRequest([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True))
    first = asyncio.Event()
    running = asyncio.create_task(collect(one_slot_pool, long, first))
    await first.wait()
    queued = asyncio.create_task(collect(one_slot_pool, long))
    await asyncio.sleep(0)  # one loop turn runs the new task's first step, which submits it
    assert one_slot_pool.stats()["workers"][0]["in_flight"] == 2
    with pytest.raises(EngineOverloaded, match="full") as info:
        await collect(one_slot_pool, long)
    assert info.value.retry_after > 0
    for task in (running, queued):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert one_slot_pool.stats()["workers"][0]["in_flight"] == 0


async def test_two_workers_share_the_load_and_answer_alike(tiny_model_dir: Path, hf_model: Any) -> None:
    settings = EngineSettings(model=str(tiny_model_dir), devices=["cpu", "cpu"], dtype=REFERENCE_DTYPE, max_num_seqs=4,
                              max_model_len=512, kv_cache_memory_mb=8)
    pool = WorkerPool(settings)
    await pool.start()
    try:
        assert [w["torch_threads"] for w in pool.stats()["workers"]] == [max(1, (os.cpu_count() or 1) // 2)] * 2
        endless = SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True)
        started = [asyncio.Event() for _ in range(4)]
        tasks = [asyncio.create_task(collect(pool, GenerationRequest([5 + i] * 6, endless), started[i]))
                 for i in range(4)]
        await asyncio.gather(*(e.wait() for e in started))
        # Each request went to the worker with the most room: two each, not four on the first.
        assert sorted(w["in_flight"] for w in pool.stats()["workers"]) == [2, 2]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        prompts = [[7, 8, 9], [11, 12, 13, 14, 15]]
        answers = await asyncio.gather(
            *(collect(pool, GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=10))) for p in prompts)
        )
        assert [ids_of(a) for a in answers] == [hf_greedy(hf_model, p, 10) for p in prompts]
    finally:
        await pool.aclose()
