"""On a CUDA host: the runner sizes its KV cache from free GPU memory and decodes exactly like
Hugging Face `generate` there (float32, so the comparison is exact)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from batching.config import SchedulerConfig
from batching.engine import Engine
from batching.models import resolve_model
from batching.params import SamplingParams
from batching.runner import ModelRunner, RunnerOptions

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_runner_sizes_kv_from_free_memory_and_matches_generate(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    options = RunnerOptions(device="cuda:0", dtype="float32", max_model_len=256, block_size=16,
                            gpu_memory_utilization=0.5)
    free_before, total = torch.cuda.mem_get_info(0)
    runner = ModelRunner(resolve_model(str(tiny_model_dir)), options)
    kv_bytes = runner.kv_cache.numel() * runner.kv_cache.element_size()
    assert runner.kv_cache.is_cuda and 0 < kv_bytes <= int(total * 0.5)
    assert kv_bytes < free_before
    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.to("cuda:0").eval()
    engine = Engine(runner, SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=32, max_model_len=256,
                                            num_kv_blocks=runner.num_kv_blocks, block_size=16))
    rng = random.Random(0)
    prompts = [[rng.randrange(4, 400) for _ in range(n)] for n in (3, 40, 17)]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    for i, prompt in enumerate(prompts):
        engine.add(i, prompt, params)
    got: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    while engine.has_work:
        for result in engine.step().results:
            got[result.seq_id].append(result.token_id)
    for i, prompt in enumerate(prompts):
        assert got[i] == _cuda_greedy(model, prompt, 24)


def _cuda_greedy(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt], device="cuda:0")
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=0)
    return [int(t) for t in out[0, len(prompt):]]
