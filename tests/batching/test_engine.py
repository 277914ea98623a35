"""The engine in-process (scheduler + runner, no worker process), iteration by iteration, against
Hugging Face `generate` on tiny random models."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from batching.config import SchedulerConfig
from batching.engine import Engine
from batching.models import resolve_model
from batching.params import SamplingParams
from batching.runner import ModelRunner, RunnerOptions
from batching.sequence import Priority
from tests.batching.conftest import REFERENCE_DTYPE, hf_greedy

GREEDY = SamplingParams(temperature=0.0, max_tokens=32)


# The reference dtype: the exact-match tests compare token for token (tests/batching/conftest.py).
REFERENCE_OPTIONS = RunnerOptions(max_model_len=256, block_size=4, dtype=REFERENCE_DTYPE)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model.eval()


@pytest.fixture(scope="module")
def runner(tiny_model_dir: Path) -> ModelRunner:
    torch.set_num_threads(1)
    return ModelRunner(resolve_model(str(tiny_model_dir)), REFERENCE_OPTIONS)


def engine(runner: ModelRunner, **config: Any) -> Engine:
    base = {"max_num_seqs": 4, "max_num_batched_tokens": 16, "max_model_len": 256,
            "num_kv_blocks": runner.num_kv_blocks, "block_size": 4}
    return Engine(runner, SchedulerConfig(**{**base, **config}))


def prompts(lengths: list[int], vocab: int = 400, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(n)] for n in lengths]


def run(eng: Engine, requests: list[tuple[list[int], SamplingParams]], every: int = 2) -> dict[int, list[int]]:
    """Submit request i at iteration i * `every` (staggered), step until all finish."""
    out: dict[int, list[int]] = {i: [] for i in range(len(requests))}
    pending = list(enumerate(requests))
    for iteration in range(10_000):
        while pending and iteration >= pending[0][0] * every:
            i, (prompt, params) = pending.pop(0)
            eng.add(i, prompt, params)
        if not pending and not eng.has_work:
            return out
        if eng.has_work:
            for result in eng.step().results:
                out[result.seq_id].append(result.token_id)
    raise AssertionError("the engine did not finish")


def test_staggered_greedy_batches_match_generate_alone(runner: ModelRunner, hf_model: Any) -> None:
    lengths = [3, 40, 17, 1, 64, 9, 25]
    max_tokens = [20, 8, 32, 12, 16, 30, 5]
    batch = prompts(lengths)
    got = run(engine(runner), [(p, SamplingParams(temperature=0.0, max_tokens=m)) for p, m in zip(batch, max_tokens,
                                                                                              strict=True)])
    for i, (prompt, m) in enumerate(zip(batch, max_tokens, strict=True)):
        assert got[i] == hf_greedy(hf_model, prompt, m), f"request {i} (prompt of {len(prompt)} tokens)"


def test_preemption_under_a_tight_kv_budget_loses_nothing(runner: ModelRunner, hf_model: Any) -> None:
    # 24 blocks of 4 = 96 tokens for five sequences that grow to 50-60 tokens each.
    eng = engine(runner, num_kv_blocks=24, max_model_len=96, max_num_seqs=5, max_num_batched_tokens=32)
    batch = prompts([12, 20, 15, 18, 10], seed=1)
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    got = run(eng, [(p, params) for p in batch], every=1)
    assert eng.scheduler.num_preemptions >= 3
    for i, prompt in enumerate(batch):
        assert got[i] == hf_greedy(hf_model, prompt, 40, stop_at_eos=False), f"request {i}"


def test_cancel_frees_the_slot_for_the_next_iteration(runner: ModelRunner) -> None:
    eng = engine(runner, max_num_seqs=1)
    a, b = prompts([5, 6], seed=2)
    eng.add(0, a, GREEDY)
    eng.step()
    eng.add(1, b, GREEDY)
    assert [r.seq_id for r in eng.step().results] == [0]  # b waits: one slot
    assert eng.abort(0)
    report = eng.step()
    assert [r.seq_id for r in report.results] == [1] and report.num_batched_tokens == len(b)
    assert list(report.queue_seconds) == [1]  # b's time in the queue is reported once, when it starts


def test_a_seed_gives_the_same_sample_whatever_shares_the_batch(runner: ModelRunner) -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=7, max_tokens=24, ignore_eos=True)
    prompt = prompts([10], seed=3)[0]
    alone = run(engine(runner), [(prompt, seeded)])[0]
    others = [(p, SamplingParams(temperature=0.8, seed=s, max_tokens=24)) for s, p in enumerate(prompts([4, 30, 7]))]
    crowded = run(engine(runner), [others[0], (prompt, seeded), *others[1:]], every=1)[1]
    assert crowded == alone
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=8, max_tokens=24, ignore_eos=True)
    assert run(engine(runner), [(prompt, other_seed)])[0] != alone


SAMPLING_THAT_IS_GREEDY = [
    ("top_k 1", SamplingParams(temperature=1.5, top_k=1, max_tokens=16, ignore_eos=True)),
    ("tiny top_p", SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=16, ignore_eos=True)),
]


@pytest.mark.parametrize(("case", "params"), SAMPLING_THAT_IS_GREEDY, ids=[c[0] for c in SAMPLING_THAT_IS_GREEDY])
def test_sampling_filters_that_leave_one_token_are_greedy(runner: ModelRunner, case: str,
                                                          params: SamplingParams) -> None:
    prompt = prompts([8], seed=4)[0]
    greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    assert run(engine(runner), [(prompt, params)])[0] == run(engine(runner), [(prompt, greedy)])[0], case


def test_sampling_follows_the_distribution(runner: ModelRunner) -> None:
    # Many one-token samples of one prompt: the most frequent token is the greedy one.
    prompt = prompts([6], seed=5)[0]
    greedy = run(engine(runner), [(prompt, SamplingParams(temperature=0.0, max_tokens=1))])[0][0]
    eng = engine(runner, max_num_seqs=64, max_num_batched_tokens=512)
    draws = run(eng, [(prompt, SamplingParams(temperature=0.3, seed=s, max_tokens=1)) for s in range(64)], every=0)
    counts: dict[int, int] = {}
    for tokens in draws.values():
        counts[tokens[0]] = counts.get(tokens[0], 0) + 1
    assert max(counts, key=lambda t: counts[t]) == greedy


def test_priority_is_passed_to_the_scheduler(runner: ModelRunner) -> None:
    eng = engine(runner, max_num_seqs=1)
    a, b = prompts([5, 5], seed=6)
    eng.add(0, a, GREEDY, Priority.BATCH)
    eng.step()
    eng.add(1, b, GREEDY, Priority.INTERACTIVE)
    report = eng.step()
    assert [r.seq_id for r in report.results] == [1]  # the batch request yielded its slot


# -- other Llama-family architectures ------------------------------------------------------------


def _tiny(kind: str) -> Any:
    import transformers as tf

    common: dict[str, Any] = {
        "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "initializer_range": 0.2, "eos_token_id": 2, "bos_token_id": 1,
    }
    configs: dict[str, Any] = {
        "mistral": lambda: tf.MistralConfig(**common, sliding_window=128),
        "qwen2": lambda: tf.Qwen2Config(**common),
        "qwen3": lambda: tf.Qwen3Config(**common, head_dim=16),
        "llama-biased-rope-scaled": lambda: tf.LlamaConfig(
            **common, attention_bias=True, mlp_bias=True,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        ),
    }
    return configs[kind]()


@pytest.fixture(params=["mistral", "qwen2", "qwen3", "llama-biased-rope-scaled"])
def family_model(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model: Any = AutoModelForCausalLM.from_config(_tiny(request.param))  # type: ignore[no-untyped-call]
    model.eval()
    model.save_pretrained(tmp_path)
    yield model, tmp_path


def test_llama_family_architectures_match_generate(family_model: tuple[Any, Path]) -> None:
    model, directory = family_model
    family_runner = ModelRunner(resolve_model(str(directory)), REFERENCE_OPTIONS)
    batch = prompts([7, 30, 12], vocab=300, seed=7)
    got = run(engine(family_runner, max_num_batched_tokens=12), [(p, GREEDY) for p in batch])
    for i, prompt in enumerate(batch):
        assert got[i] == hf_greedy(model, prompt, GREEDY.max_tokens), f"{model.config.model_type} request {i}"


def test_unsupported_architectures_are_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        ModelRunner(resolve_model(str(tmp_path)), RunnerOptions())


# -- prefix caching ------------------------------------------------------------------------------


def test_a_cached_prefix_gives_the_same_tokens_as_a_cold_one(runner: ModelRunner, hf_model: Any) -> None:
    shared = prompts([37], seed=8)[0]  # nine blocks of 4 and a bit: the system prompt of every turn
    turns = [shared + tail for tail in prompts([3, 11, 6], seed=9)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    warm = engine(runner, max_num_batched_tokens=64)
    run(warm, [(shared, params)])  # fills the cache
    got = run(warm, [(t, params) for t in turns], every=1)
    assert warm.scheduler.block_manager.prefix_hits >= 3 * 36  # each turn found the shared blocks cached
    cold = engine(runner, max_num_batched_tokens=64, enable_prefix_caching=False)
    expected = run(cold, [(t, params) for t in turns], every=1)
    assert got == expected
    for i, turn in enumerate(turns):
        assert got[i] == hf_greedy(hf_model, turn, 12, stop_at_eos=False), f"turn {i}"


def test_prefix_sharing_under_preemption_loses_nothing(runner: ModelRunner, hf_model: Any) -> None:
    shared = prompts([16], seed=10)[0]
    batch = [shared + tail for tail in prompts([4, 9, 2, 7, 5], seed=11)]
    eng = engine(runner, num_kv_blocks=26, max_model_len=100, max_num_seqs=5, max_num_batched_tokens=32)
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    got = run(eng, [(p, params) for p in batch], every=1)
    assert eng.scheduler.num_preemptions >= 1 and eng.scheduler.block_manager.prefix_hits > 0
    for i, prompt in enumerate(batch):
        assert got[i] == hf_greedy(hf_model, prompt, 40, stop_at_eos=False), f"request {i}"


def test_other_choices_share_the_prompt_and_sample_on_their_own(runner: ModelRunner) -> None:
    eng = engine(runner, max_num_batched_tokens=64)
    prompt = prompts([30], seed=12)[0]
    sampled = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    eng.add(0, prompt, SamplingParams(temperature=1.0, seed=1, max_tokens=10, ignore_eos=True))
    eng.add(1, prompt, SamplingParams(temperature=1.0, seed=2, max_tokens=10, ignore_eos=True), after=0)
    out: dict[int, list[int]] = {0: [], 1: []}
    while eng.has_work:
        for r in eng.step().results:
            out[r.seq_id].append(r.token_id)
    assert eng.scheduler.block_manager.prefix_hits == 28  # the second choice computed only the last block
    assert out[0] != out[1] and sampled.n == 1


def test_logprobs_are_the_models_and_greedy_picks_the_top(runner: ModelRunner, hf_model: Any) -> None:
    prompt = prompts([9], seed=13)[0]
    eng = engine(runner)
    eng.add(0, prompt, SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=3))
    report = eng.step()
    logprob, top_ids, top_values = report.logprobs[0]
    with torch.inference_mode():
        expected = torch.log_softmax(hf_model(torch.tensor([prompt])).logits[0, -1].float(), -1)
    assert top_ids[0] == report.results[0].token_id == int(expected.argmax())
    assert logprob == pytest.approx(float(expected.max()), abs=1e-4)
    assert list(top_ids) == expected.topk(3).indices.tolist()
    assert list(top_values) == pytest.approx(expected.topk(3).values.tolist(), abs=1e-4)
