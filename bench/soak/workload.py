"""The soak's traffic: a seeded mix of cacheable and fresh chat, tool calls, the local engine, legacy
completions, embeddings, abandoned streams, requested faults, the Responses API (stored, chained,
retrieved) and the Messages API, and with a vLLM upstream, chat, Responses and Messages to it."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ENGINE_MODEL", "KEYS", "MAX_CHAIN", "Mix", "Request", "Stored", "catalogue"]

KEYS = {"soak-a": "sk-soak-tenant-a", "soak-b": "sk-soak-tenant-b"}
ENGINE_MODEL = "soak-llama"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
# Shares of the traffic (normalised). The first eight are the original mix, kept in proportion.
SHARES = {
    "cacheable": 30,
    "chat": 22,
    "tools": 15,
    "engine": 12,
    "completions": 7,
    "embeddings": 7,
    "abandoned": 4,
    "fault": 3,
    "responses": 12,
    "retrieve": 2,
    "messages": 8,
}
VLLM_SHARE = 6  # added when a vLLM upstream is given (on two cores it serves a few requests a second)
MAX_CHAIN = 4  # turns in one stored conversation at most: its history goes upstream on every turn
CHAIN_SHARE = 0.4  # of Responses requests, those that continue an earlier stored response
TOPICS = [
    "weather",
    "flights",
    "hotels",
    "email",
    "calendar",
    "stocks",
    "recipes",
    "music",
    "invoices",
    "tickets",
    "parcels",
    "payments",
    "contacts",
    "documents",
    "translation",
    "reminders",
    "restaurants",
    "cars",
    "news",
    "currency",
    "podcasts",
    "fitness",
    "recipes-vegan",
    "taxes",
]
ACTIONS = ["get", "search", "create", "cancel", "list", "update"]
WORDS = [
    "how",
    "do",
    "I",
    "the",
    "a",
    "my",
    "reset",
    "order",
    "account",
    "price",
    "plan",
    "refund",
    "trip",
    "Paris",
    "Lisbon",
    "tomorrow",
    "weekly",
    "report",
    "invoice",
    "password",
    "email",
    "team",
    "budget",
]


def catalogue(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    picked = rng.sample([(a, t) for a in ACTIONS for t in TOPICS], 24)
    return [
        {
            "type": "function",
            "function": {
                "name": f"{a}_{t.replace('-', '_')}",
                "description": f"{a.capitalize()} {t} for the user.",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            },
        }
        for a, t in picked
    ]


@dataclass(frozen=True)
class Request:
    kind: str
    path: str
    body: dict[str, Any] | None  # None: a GET
    stream: bool
    tenant: str
    abandon: bool = False
    fault: bool = False  # asks the sim for a failure: an error is the expected answer
    turn: int = 0  # Responses: the stored response's turn in its conversation (1: no previous response)
    refers_to: float | None = None  # when the stored response named here was asked for (expiry is no error)


@dataclass(frozen=True)
class Stored:
    response_id: str
    turn: int
    at: float  # when the request that created it was sent (the store's clock starts later)


class Mix:
    """Draws the next request; seeded, so two runs send the same sequence of kinds and bodies (the
    response ids that Responses requests name are the gateway's, remembered as answers come back)."""

    def __init__(self, seed: int, vllm_model: str | None = None):
        self.rng = random.Random(seed)
        self.vllm_model = vllm_model
        shares = {**SHARES, **({"vllm": VLLM_SHARE} if vllm_model else {})}
        total = sum(shares.values())
        self.bounds: list[tuple[float, Callable[[str, bool], Request]]] = []
        acc = 0.0
        for kind, share in shares.items():
            acc += share / total
            self.bounds.append((acc, getattr(self, "_" + kind)))
        self.questions = [
            f"What is the {w} policy for {t}?" for w in ("refund", "privacy", "travel", "expense") for t in TOPICS[:10]
        ]
        self.catalogues = [catalogue(s) for s in range(3)]
        # Per tenant: recent responses to continue (a stored id is only ever read by its own
        # tenant), and a longer memory for retrieves, long enough to reach past the store's TTL.
        self.recent: dict[str, deque[Stored]] = {t: deque(maxlen=16) for t in KEYS}
        self.remembered: dict[str, deque[Stored]] = {t: deque(maxlen=256) for t in KEYS}

    def remember(self, tenant: str, stored: Stored) -> None:
        """A stored response the gateway answered with: later requests continue or retrieve it."""
        self.remembered[tenant].append(stored)
        if stored.turn < MAX_CHAIN:
            self.recent[tenant].append(stored)

    def _text(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n)) + f" #{self.rng.randrange(10**9)}"

    def _pick(self, pool: deque[Stored]) -> Stored | None:
        i = self.rng.random()  # drawn whether or not the pool has entries: the sequence stays seeded
        return pool[int(i * len(pool))] if pool else None

    def next(self) -> Request:
        r, u = self.rng, self.rng.random()
        tenant = r.choice(list(KEYS))
        stream = r.random() < 0.5
        draw = next((d for bound, d in self.bounds if u < bound), self.bounds[-1][1])
        return draw(tenant, stream)

    def _cacheable(self, tenant: str, stream: bool) -> Request:
        # The question pool is small and skewed: hits, misses and coalesced herds.
        q = self.questions[min(int(self.rng.paretovariate(1.2)) - 1, len(self.questions) - 1)]
        body = {"model": "sim-model", "temperature": 0, "messages": [{"role": "user", "content": q}]}
        return Request("cacheable", CHAT, body, stream, tenant)

    def _chat(self, tenant: str, stream: bool) -> Request:
        body = {"model": "sim-model", "temperature": 1, "messages": [{"role": "user", "content": self._text(12)}]}
        return Request("chat", CHAT, body, stream, tenant)

    def _tools(self, tenant: str, stream: bool) -> Request:
        r = self.rng
        tools = r.choice(self.catalogues)
        topic = r.choice(TOPICS)
        body = {
            "model": "sim-model",
            "tools": tools,
            "messages": [{"role": "user", "content": f"Please {r.choice(ACTIONS)} my {topic} for next week"}],
        }
        return Request("tools", CHAT, body, stream, tenant)

    def _engine(self, tenant: str, stream: bool) -> Request:
        body = {
            "model": ENGINE_MODEL,
            "max_tokens": 16,
            "temperature": 0,
            "messages": [{"role": "user", "content": self._text(8)}],
        }
        return Request("engine", CHAT, body, stream, tenant)

    def _completions(self, tenant: str, stream: bool) -> Request:
        body = {"model": "sim-model", "prompt": self._text(10), "max_tokens": 12}
        return Request("completions", "/v1/completions", body, stream, tenant)

    def _embeddings(self, tenant: str, stream: bool) -> Request:
        body = {"model": "embed-model", "input": [self._text(6) for _ in range(self.rng.randint(1, 4))]}
        return Request("embeddings", "/v1/embeddings", body, False, tenant)

    def _abandoned(self, tenant: str, stream: bool) -> Request:
        body = {
            "model": "sim-model",
            "temperature": 1,
            "messages": [{"role": "user", "content": self._text(10)}],
            "sim": {"output_tokens": 40, "itl_ms": 20},
        }
        return Request("abandoned", CHAT, body, True, tenant, abandon=True)

    def _fault(self, tenant: str, stream: bool) -> Request:
        fault = self.rng.choice(
            [
                {"fault": "error", "status": 500},
                {"fault": "disconnect", "after_chunks": 2},
                {"fault": "malformed_json", "after_chunks": 1},
            ]
        )
        body = {
            "model": "flaky-model",
            "temperature": 1,
            "messages": [{"role": "user", "content": self._text(5)}],
            "sim": fault,
        }
        return Request("fault", CHAT, body, stream, tenant, fault=True)

    def _responses(self, tenant: str, stream: bool, model: str = "sim-model", kind: str = "responses") -> Request:
        """A stored Responses request; a share continues one of the tenant's recent responses (kind
        `chained` to the sim; to vLLM both are `vllm_responses`)."""
        chain = self.rng.random() < CHAIN_SHARE
        previous = self._pick(self.recent[tenant])
        body: dict[str, Any] = {"model": model, "input": self._text(10), "store": True}
        if model != "sim-model":
            body |= {"max_output_tokens": 16, "temperature": 0}
        if chain and previous is not None:
            body["previous_response_id"] = previous.response_id
            kind = "chained" if kind == "responses" else kind
            return Request(kind, RESPONSES, body, stream, tenant, turn=previous.turn + 1, refers_to=previous.at)
        return Request(kind, RESPONSES, body, stream, tenant, turn=1)

    def _retrieve(self, tenant: str, stream: bool) -> Request:
        """GET a stored response of this tenant's: half the time the newest, else any remembered
        (in a long run mostly past the TTL, where a 404 is the answer)."""
        pool = self.remembered[tenant]
        newest = self.rng.random() < 0.5
        stored = self._pick(pool)
        if newest and pool:
            stored = pool[-1]
        instead = self._responses(tenant, stream)  # drawn either way, so the draws do not depend on timing
        if stored is None:  # nothing stored yet
            return instead
        return Request("retrieve", f"{RESPONSES}/{stored.response_id}", None, False, tenant, refers_to=stored.at)

    def _messages(self, tenant: str, stream: bool, model: str = "sim-model", kind: str = "messages") -> Request:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 16 if model != "sim-model" else 64,
            "messages": [{"role": "user", "content": self._text(10)}],
        }
        if self.rng.random() < 0.3:
            body["system"] = "You answer briefly."
        if model != "sim-model":
            body["temperature"] = 0
        return Request(kind, MESSAGES, body, stream, tenant)

    def _vllm(self, tenant: str, stream: bool) -> Request:
        """Greedy and short, to a real engine: mostly chat, a share of Responses and Messages."""
        assert self.vllm_model is not None
        u = self.rng.random()
        if u < 0.15:
            return self._responses(tenant, stream, self.vllm_model, "vllm_responses")
        if u < 0.3:
            return self._messages(tenant, stream, self.vllm_model, "vllm_messages")
        body = {
            "model": self.vllm_model,
            "max_tokens": 8,
            "temperature": 0,
            "messages": [{"role": "user", "content": self._text(8)}],
        }
        return Request("vllm", CHAT, body, stream, tenant)
