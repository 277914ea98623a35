"""Fixtures for the local engine: a tiny random Llama with a real byte-level BPE tokenizer, built in
a temporary directory (no model hub), and the bundled SmolLM2 for the few `model` tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Continuous batching schedules work at the granularity of one model iteration.",
    "Grüße aus Köln! Ça va? Café, naïve, façade — 東京 and 北京 are cities. 🙂 🚀",
    "def add(a, b):\n    return a + b\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 3.14159 2026-11-28",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(directory: Path) -> int:
    """Train a small byte-level BPE (so multi-byte characters split across tokens) and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "<|im_end|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return len(fast)


def build_tiny_llama(directory: Path, vocab_size: int, seed: int = 0, max_positions: int = 512) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        initializer_range=0.2,  # spread-out logits: greedy ties between near-equal tokens are unlikely
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)


# Exact-match tests run the engine in the reference's dtype: they check that batching, paging and
# prefix caching change no token, which only a deterministic comparison can show. On a CPU with
# native bfloat16 the engine's default ("auto") is bfloat16, whose greedy output drifts from
# float32's within a few dozen tokens (test_smollm2.py measures how far it agrees).
REFERENCE_DTYPE = "float32"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    vocab = build_tokenizer(directory)
    build_tiny_llama(directory, vocab)
    return directory


def hf_greedy(model: object, prompt: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """What Hugging Face `generate` produces for `prompt` alone, greedy."""
    import torch

    kwargs = {} if stop_at_eos else {"eos_token_id": None}
    out = model.generate(  # type: ignore[attr-defined]
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, **kwargs,
    )
    return [int(t) for t in out[0, len(prompt):]]
