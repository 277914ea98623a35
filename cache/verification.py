"""Verification sampling: the gateway re-asks the backend for a sample of hits, the cache compares
the fresh answer with the one it served, and keeps the live false-hit rate.

A contradicted semantic hit tightens its entry: the entry will only serve prompts closer than the
one that was contradicted. A contradicted exact hit means the backend does not answer that request
deterministically, so the entry goes.
"""

from __future__ import annotations

import json
import random
from collections import deque
from typing import Any

__all__ = ["VerificationLog", "answer_text", "answers_agree", "raised_entry_threshold", "tool_calls"]


class VerificationLog:
    """Which hits to verify (a seeded sample) and the recent verdicts on semantic hits."""

    def __init__(self, rate: float, window: int, seed: int | None = None):
        self.rate = rate
        self._rng = random.Random(seed)
        self._recent: deque[bool] = deque(maxlen=window)  # True: contradicted
        self.verified = 0
        self.contradicted = 0

    def sample(self) -> bool:
        return self.rate > 0 and self._rng.random() < self.rate

    def record(self, layer: str, contradicted: bool) -> None:
        self.verified += 1
        self.contradicted += contradicted
        if layer == "semantic":
            self._recent.append(contradicted)

    def window(self) -> tuple[int, int]:
        """(contradicted, verified) among the recent semantic hits."""
        return sum(self._recent), len(self._recent)

    @property
    def false_hit_rate(self) -> float | None:
        """Share of recently verified semantic hits that were wrong; None before any verdict."""
        if not self._recent:
            return None
        return sum(self._recent) / len(self._recent)


def tool_calls(response: dict[str, Any]) -> list[tuple[str, Any]]:
    """(function name, parsed arguments) of a response's tool calls, in order."""
    message = (response.get("choices") or [{}])[0].get("message") or {}
    out: list[tuple[str, Any]] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        out.append((str(function.get("name")), parsed))
    return out


def answer_text(response: dict[str, Any]) -> str:
    message = (response.get("choices") or [{}])[0].get("message") or {}
    content = message.get("content")
    return content.strip() if isinstance(content, str) else ""


def answers_agree(cached: dict[str, Any], fresh: dict[str, Any], text_similarity: float | None,
                  threshold: float) -> bool | None:
    """Do two answers to (what the cache took for) the same question agree? Tool calls must match
    exactly; texts must be identical or embed within `threshold`. None: cannot tell."""
    calls_cached, calls_fresh = tool_calls(cached), tool_calls(fresh)
    if calls_cached or calls_fresh:
        return calls_cached == calls_fresh
    a, b = " ".join(answer_text(cached).split()), " ".join(answer_text(fresh).split())
    if a == b:
        return True
    if not a or not b or text_similarity is None:
        return None
    return text_similarity >= threshold


def raised_entry_threshold(current: float, score: float, margin: float) -> float:
    """After a contradiction at decision score `score`, the entry serves only prompts scored higher.
    Above 1.0 it serves no semantic match at all (exact hits still)."""
    return max(current, score + margin)
