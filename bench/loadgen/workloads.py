"""Workloads: what each request says. A workload is a list of phases; a phase hands out sessions;
a session is one or more turns (multi-turn conversations feed each reply into the next turn).

- `synthetic`: prompt and output lengths in tokens drawn from distributions, corpus text.
- `paraphrase`: phase `cold` sends originals, phase `warm` their paraphrases (exercises the cache).
- `tools`: each request carries tens to hundreds of tools and asks for one of them.
- `multiturn`: conversations of several turns with growing context.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen.corpus import paraphrase_pairs, synthetic_prompt, synthetic_tools
from bench.loadgen.record import RequestRecord
from bench.loadgen.tokens import ApproxTokenizer, TokenCounter
from sim.config import Distribution

__all__ = ["WORKLOADS", "Phase", "RequestOptions", "Session", "Turn", "Workload", "build_workload"]


@dataclass(slots=True)
class Turn:
    body: dict[str, Any]
    endpoint: str = "/chat/completions"
    tag: str = ""
    expected_tool: str | None = None
    collect_text: bool = False
    prompt_tokens: int | None = None  # the client's own count, used when the server reports no usage


class Session:
    """A single-turn session; subclasses continue the conversation."""

    def __init__(self, turn: Turn):
        self._turn = turn

    def first(self) -> Turn:
        return self._turn

    def next(self, rec: RequestRecord) -> Turn | None:
        return None


@dataclass(slots=True)
class Phase:
    name: str
    make: Callable[[int, random.Random], Session]
    limit: int | None = None  # sessions in this phase (None: as many as the run allows)


@dataclass(slots=True)
class Workload:
    name: str
    phases: list[Phase]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestOptions:
    model: str = "sim-model"
    stream: bool = True
    prompt_tokens: Distribution = field(default_factory=lambda: Distribution.fixed(128))
    output_tokens: Distribution = field(default_factory=lambda: Distribution.fixed(64))
    exact_output: bool = False  # ask servers that can (vLLM, the sim) for exactly the drawn output length
    extra_body: dict[str, Any] = field(default_factory=dict)
    tools_per_request: Distribution = field(default_factory=lambda: Distribution.fixed(50))
    turns: Distribution = field(default_factory=lambda: Distribution.fixed(3))
    tokenizer: TokenCounter = field(default_factory=ApproxTokenizer)


def _body(opts: RequestOptions, messages: list[dict[str, Any]], n_out: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "messages": messages, "max_tokens": n_out}
    if opts.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if opts.exact_output:
        body["min_tokens"] = n_out
        body["ignore_eos"] = True
        body["sim"] = {"output_tokens": n_out}
    body.update(opts.extra_body)
    return body


def _count(dist: Distribution, rng: random.Random) -> int:
    return max(1, round(dist.sample(rng)))


def synthetic(opts: RequestOptions) -> Workload:
    def make(i: int, rng: random.Random) -> Session:
        n_in = _count(opts.prompt_tokens, rng)
        prompt = synthetic_prompt(rng, n_in)
        body = _body(opts, [{"role": "user", "content": prompt}], _count(opts.output_tokens, rng))
        return Session(Turn(body, prompt_tokens=n_in))

    return Workload("synthetic", [Phase("main", make)])


def paraphrase(opts: RequestOptions) -> Workload:
    pairs, source = paraphrase_pairs()

    def phase(index: int, name: str) -> Phase:
        def make(i: int, rng: random.Random) -> Session:
            text, category = pairs[i % len(pairs)][index], pairs[i % len(pairs)][2]
            body = _body(opts, [{"role": "user", "content": text}], _count(opts.output_tokens, rng))
            body.setdefault("temperature", 0)  # caches serve only deterministic-enough requests
            return Session(Turn(body, tag=f"{name}:{category}", prompt_tokens=opts.tokenizer.count(text)))

        return Phase(name, make, limit=len(pairs))

    return Workload("paraphrase", [phase(0, "cold"), phase(1, "warm")], {"pairs": len(pairs), "source": source})


def tools(opts: RequestOptions) -> Workload:
    catalogue = synthetic_tools()

    def make(i: int, rng: random.Random) -> Session:
        n = min(_count(opts.tools_per_request, rng), len(catalogue))
        wanted = rng.choice(catalogue)
        others = rng.sample([t for t in catalogue if t.name != wanted.name], n - 1)
        chosen = [*others, wanted]
        rng.shuffle(chosen)
        body = _body(opts, [{"role": "user", "content": wanted.query}], _count(opts.output_tokens, rng))
        body["tools"] = [t.schema for t in chosen]
        return Session(
            Turn(body, tag=f"tools={n}", expected_tool=wanted.name, prompt_tokens=opts.tokenizer.count(wanted.query))
        )

    return Workload("tools", [Phase("main", make)], {"catalogue": len(catalogue), "source": "synthetic"})


class _Conversation(Session):
    def __init__(self, opts: RequestOptions, rng: random.Random, turns: int):
        self._opts, self._rng, self._left = opts, rng, turns
        self._messages: list[dict[str, Any]] = []
        self._turn_no = 0
        super().__init__(self._ask())

    def _ask(self) -> Turn:
        self._turn_no += 1
        self._left -= 1
        prompt = synthetic_prompt(self._rng, _count(self._opts.prompt_tokens, self._rng))
        self._messages.append({"role": "user", "content": prompt})
        body = _body(self._opts, list(self._messages), _count(self._opts.output_tokens, self._rng))
        n_in = sum(self._opts.tokenizer.count(m["content"]) for m in self._messages)
        return Turn(body, tag=f"turn={self._turn_no}", collect_text=True, prompt_tokens=n_in)

    def next(self, rec: RequestRecord) -> Turn | None:
        if self._left <= 0 or rec.error is not None:
            return None
        self._messages.append({"role": "assistant", "content": "".join(rec.text or [])})
        return self._ask()


def multiturn(opts: RequestOptions) -> Workload:
    def make(i: int, rng: random.Random) -> Session:
        return _Conversation(opts, random.Random(rng.random()), _count(opts.turns, rng))

    return Workload("multiturn", [Phase("main", make)])


WORKLOADS: dict[str, Callable[[RequestOptions], Workload]] = {
    "synthetic": synthetic,
    "paraphrase": paraphrase,
    "tools": tools,
    "multiturn": multiturn,
}


def build_workload(name: str, opts: RequestOptions) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}: choose from {', '.join(WORKLOADS)}")
    return WORKLOADS[name](opts)
