"""Streamed chat workloads over HTTP for `bench/engine.py`: the same requests, sent the same way, to
any OpenAI-compatible server (this gateway in front of its engine, or vLLM).

    chats    N concurrent chats sent at once: user prompts of varied length (log-uniform words), outputs
             of 16-192 tokens, greedy, end-of-sequence ignored so every system generates the same count
    prefix   conversations that share one ~500-token system prompt, several turns each (every turn
             carries the earlier ones, the assistant's own answers included), run side by side

Per request: the time to the first streamed token and the completion tokens (from `usage`). Per run:
output tokens per second over the wall time of the whole run, TTFT p50/p99, and a digest of every
answer's text, so that two systems' greedy outputs can be compared. `stream_turn` (one streamed
turn, timed) also serves `bench/fleet.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.measure import percentile

__all__ = [
    "Answer",
    "Chat",
    "Outcome",
    "TurnRefused",
    "chats_workload",
    "prefix_workload",
    "run_workload",
    "stream_turn",
    "summarise",
]

_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are or at from have an but not which they "
    "you were all one we can there their been has more if will would who so what about when up out them "
    "some could time only into other than then its also two first new these may any like people after "
    "over years most such way where well through made should because each many those between work state "
    "train station ticket platform delay route city river bridge north south morning evening weather "
    "report market price energy water system model answer question reason simple careful detail summary"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class Chat:
    """One conversation: a system prompt, user turns sent one after another, and tokens per answer."""

    system: str | None
    turns: list[str]
    output_tokens: list[int]


@dataclass
class Outcome:
    ttft: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    texts: list[str] = field(default_factory=list)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def chats_workload(n: int, seed: int, prompt_words: tuple[int, int] = (12, 400),
                   outputs: tuple[int, int] = (16, 192)) -> list[Chat]:
    rng = random.Random(seed)
    return [Chat(None, [_words(rng, _log_uniform(rng, *prompt_words))], [_log_uniform(rng, *outputs)])
            for _ in range(n)]


def prefix_workload(conversations: int, turns: int, seed: int, system_words: int = 380,
                    outputs: tuple[int, int] = (16, 96)) -> list[Chat]:
    rng = random.Random(seed)
    system = "You are the assistant of a railway company. " + _words(rng, system_words)
    return [Chat(system, [_words(rng, _log_uniform(rng, 6, 40)) for _ in range(turns)],
                 [_log_uniform(rng, *outputs) for _ in range(turns)]) for _ in range(conversations)]


@dataclass
class Answer:
    """One streamed chat turn as its client saw it."""

    ttft: float  # seconds from sending to the first content (to the end when there was none)
    text: str
    completion_tokens: int  # from `usage`
    errors: list[str]  # error events inside the stream


class TurnRefused(RuntimeError):
    def __init__(self, url: str, status: int, body: bytes):
        super().__init__(f"{url}: HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


async def stream_turn(
    client: httpx.AsyncClient, url: str, model: str, messages: list[dict[str, str]], max_tokens: int
) -> Answer:
    """One greedy streamed chat turn, end-of-sequence ignored (every system generates `max_tokens`);
    `TurnRefused` when the server answers with an error status."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    tokens = 0
    errors: list[str] = []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise TurnRefused(url, resp.status_code, await resp.aread())
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk: Any = orjson.loads(line[6:])
            if chunk.get("error"):
                errors.append(str(chunk["error"]))
            if chunk.get("usage"):
                tokens += int(chunk["usage"]["completion_tokens"])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    text.append(piece)
    return Answer((first or time.perf_counter()) - sent, "".join(text), tokens, errors)


async def run_workload(url: str, model: str, chats: list[Chat]) -> tuple[Outcome, float]:
    """Every conversation at once, its turns in order; returns the outcome and the wall seconds."""
    outcome = Outcome()
    limits = httpx.Limits(max_connections=len(chats) + 4, max_keepalive_connections=len(chats) + 4)

    async def converse(client: httpx.AsyncClient, chat: Chat) -> None:
        messages = [{"role": "system", "content": chat.system}] if chat.system else []
        for user, tokens in zip(chat.turns, chat.output_tokens, strict=True):
            messages.append({"role": "user", "content": user})
            answer = await stream_turn(client, url, model, messages, tokens)
            outcome.completion_tokens += answer.completion_tokens
            outcome.ttft.append(answer.ttft)
            outcome.texts.append(answer.text)
            messages.append({"role": "assistant", "content": answer.text})

    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(converse(client, c) for c in chats))
        return outcome, time.perf_counter() - started


def summarise(name: str, outcome: Outcome, seconds: float, expected_tokens: int) -> dict[str, Any]:
    if outcome.completion_tokens != expected_tokens:
        raise RuntimeError(f"{name}: {outcome.completion_tokens} output tokens, expected {expected_tokens}")
    digest = hashlib.sha256("\x00".join(sorted(outcome.texts)).encode()).hexdigest()[:16]
    return {
        "system": name,
        "output_tokens": outcome.completion_tokens,
        "seconds": round(seconds, 2),
        "output_tok_s": round(outcome.completion_tokens / seconds, 2),
        "ttft_p50_s": round(percentile(outcome.ttft, 0.5), 3),
        "ttft_p99_s": round(percentile(outcome.ttft, 0.99), 3),
        "texts_digest": digest,
    }
