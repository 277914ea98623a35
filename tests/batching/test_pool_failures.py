"""The pool when things go wrong: a worker killed mid-request, KV memory too small, a bad model."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from batching import EngineError, EngineSettings, GenerationOutput, GenerationRequest, SamplingParams, WorkerPool
from tests.batching.conftest import REFERENCE_DTYPE, hf_greedy


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model.eval()


async def collect(pool: WorkerPool, request: GenerationRequest,
                  first: asyncio.Event | None = None) -> list[GenerationOutput]:
    outputs = []
    async for out in pool.generate(request):
        outputs.append(out)
        if first is not None:
            first.set()
    return outputs


async def test_a_killed_worker_fails_its_requests_and_is_replaced(tiny_model_dir: Path, hf_model: Any) -> None:
    pool = WorkerPool(EngineSettings(model=str(tiny_model_dir), devices=["cpu"], dtype=REFERENCE_DTYPE,
                                     max_model_len=512, kv_cache_memory_mb=8, restart_backoff_s=0))
    await pool.start()
    try:
        endless = SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True)
        started = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(collect(pool, GenerationRequest([5 + i] * 9, endless), started[i]))
                 for i in range(2)]
        await asyncio.gather(*(e.wait() for e in started))
        pid = pool.stats()["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            assert isinstance(outcome, EngineError)
            assert "stopped while serving" in str(outcome) and "SIGKILL" in str(outcome)
        await pool.wait_ready(timeout=120)
        worker = pool.stats()["workers"][0]
        assert worker["restarts"] == 1 and worker["pid"] != pid and worker["in_flight"] == 0
        restarts = REGISTRY.get_sample_value("switchyard_engine_worker_restarts_total",
                                             {"model": pool.model_name, "worker": "0"})
        assert restarts is not None and restarts >= 1
        prompt = [7, 8, 9, 10]
        outputs = await collect(pool, GenerationRequest(prompt, SamplingParams(temperature=0.0, max_tokens=12)))
        assert [t for o in outputs for t in o.token_ids] == hf_greedy(hf_model, prompt, 12)
    finally:
        await pool.aclose()
    assert not pool.ready


async def test_preemption_under_a_tight_kv_budget_returns_every_request(tiny_model_dir: Path,
                                                                        hf_model: Any) -> None:
    # 24 blocks of 4 tokens (96) for six sequences that each grow to 50-60 tokens.
    pool = WorkerPool(EngineSettings(model=str(tiny_model_dir), devices=["cpu"], dtype=REFERENCE_DTYPE, max_num_seqs=6,
                                     max_num_batched_tokens=32, max_model_len=96, block_size=4, kv_cache_blocks=24))
    await pool.start()
    try:
        rng = random.Random(3)
        batch = [[rng.randrange(4, 400) for _ in range(n)] for n in (12, 20, 15, 18, 10, 14)]
        params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
        results = await asyncio.gather(*(collect(pool, GenerationRequest(p, params)) for p in batch))
        for prompt, outputs in zip(batch, results, strict=True):
            assert [t for o in outputs for t in o.token_ids] == hf_greedy(hf_model, prompt, 40, stop_at_eos=False)
            assert outputs[-1].finish_reason == "length"
        preemptions = REGISTRY.get_sample_value("switchyard_engine_preemptions_total",
                                                {"model": pool.model_name, "worker": "0"})
        assert preemptions is not None and preemptions >= 1
    finally:
        await pool.aclose()


START_FAILURES = [
    ("an unsupported architecture", "gpt2", {}, "not supported"),
    ("a context longer than the KV cache", "llama", {"kv_cache_blocks": 4, "block_size": 4, "max_model_len": 64},
     "exceeds the KV cache capacity"),
]


@pytest.mark.parametrize(("case", "arch", "overrides", "message"), START_FAILURES, ids=[c[0] for c in START_FAILURES])
async def test_start_failures_are_reported(tiny_model_dir: Path, tmp_path: Path, case: str, arch: str,
                                           overrides: dict[str, Any], message: str) -> None:
    model_dir = tiny_model_dir
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path)
        model_dir = tmp_path
    pool = WorkerPool(EngineSettings(model=str(model_dir), devices=["cpu"], dtype=REFERENCE_DTYPE, **overrides))
    with pytest.raises(EngineError, match=message):
        await pool.start()
    assert not pool.ready
    with pytest.raises(EngineError, match="not running"):
        await collect(pool, GenerationRequest([1, 2]))
