"""Deterministic fake text: output tokens derived from the prompt, and a cheap prompt token count.

Each output token is one common English word (a single token for BPE tokenizers such as SmolLM2's),
so a client that counts tokens with a real tokenizer agrees with the sim's usage figures.
The same prompt always yields the same text, which keeps cache tests honest.
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["WORDS", "count_prompt_tokens", "message_text", "output_tokens", "seed_of"]

WORDS: tuple[str, ...] = (
    "the",
    "time",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "world",
    "life",
    "hand",
    "part",
    "child",
    "eye",
    "place",
    "work",
    "week",
    "case",
    "point",
    "number",
    "group",
    "problem",
    "fact",
    "good",
    "new",
    "first",
    "last",
    "long",
    "great",
    "little",
    "own",
    "other",
    "old",
    "right",
    "big",
    "high",
    "small",
    "large",
    "next",
    "early",
    "young",
    "important",
    "public",
    "same",
    "able",
    "to",
    "of",
    "in",
    "for",
    "on",
    "with",
    "at",
    "by",
    "from",
    "up",
    "about",
    "into",
    "over",
    "after",
    "water",
    "light",
    "house",
    "city",
    "river",
    "story",
)
# JSON-ready forms: the words are plain ASCII, so encoding is just adding the leading space.
_FIRST = tuple(w for w in WORDS)
_LATER = tuple(" " + w for w in WORDS)


def seed_of(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def output_tokens(seed: int, start: int, count: int) -> list[str]:
    """Tokens `start`…`start+count-1` of the output stream that `seed` names."""
    n = len(WORDS)
    return [(_FIRST if i == 0 else _LATER)[(seed + i * 7) % n] for i in range(start, start + count)]


def message_text(content: Any) -> str:
    """The text of a message's `content`: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: Any) -> int:
    """Approximate prompt tokens: whitespace words plus a few per message for the chat template."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for m in messages:
        if isinstance(m, dict):
            total += 3 + len(message_text(m.get("content")).split())
    return total
