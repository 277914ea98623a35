"""ResponseCache over the in-memory store, with a deterministic embedding (no model)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from cache import CacheSettings, CacheSwitch, MemoryStore, ResponseCache
from tests.cache.support import Embed, chat, completion, look

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def make(**settings: Any) -> tuple[ResponseCache, Clock]:
    clock = Clock()
    s = CacheSettings(**settings)
    cache = ResponseCache(s, MemoryStore(max_entries=s.max_entries, clock=clock), None, clock=clock)
    await cache.start()
    return cache, clock


async def remember(cache: ResponseCache, tenant: str, request: dict[str, Any], answer: str = "An answer.") -> None:
    lookup = await look(cache, tenant, request, Embed())
    assert lookup.status == "miss", lookup
    assert await cache.store(lookup, completion(answer))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_exact_hit_never_embeds() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I reset my password?"))
    embed = Embed()
    before = metric("switchyard_cache_hits_total", layer="exact")
    lookup = await look(cache, "t1", chat("How do I reset my password?", stream=True), embed)
    assert lookup.status == "exact" and lookup.response is not None
    assert lookup.response["choices"][0]["message"]["content"] == "An answer."
    assert embed.calls == []
    assert not lookup.storable
    assert metric("switchyard_cache_hits_total", layer="exact") == before + 1


async def test_semantic_hit_on_a_rewording() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I reset my password?"))
    lookup = await look(cache, "t1", chat("how can i reset my password"), Embed())
    assert lookup.status == "semantic", lookup
    assert lookup.similarity is not None and 0.6 <= lookup.similarity < 1.0


async def test_a_trap_is_a_guarded_miss() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I cancel my subscription?"))
    before = metric("switchyard_cache_misses_total", reason="guard:negation")
    lookup = await look(cache, "t1", chat("How do I not cancel my subscription?"), Embed())
    assert (lookup.status, lookup.reason) == ("miss", "guard:negation")
    assert lookup.storable
    assert metric("switchyard_cache_misses_total", reason="guard:negation") == before + 1


async def test_tenants_never_share_an_entry() -> None:
    cache, _ = await make()
    await remember(cache, "alice", chat("What is my account balance?"), "Alice has 10.")
    for text in ("What is my account balance?", "what is my account balance"):
        lookup = await look(cache, "bob", chat(text), Embed())
        assert lookup.status == "miss" and lookup.reason == "no_candidate", lookup
    assert (await look(cache, "alice", chat("What is my account balance?"), Embed())).status == "exact"


@pytest.mark.parametrize(
    "other",
    [
        chat("What is the refund policy?", system="You are a pirate."),
        chat("What is the refund policy?", system=None),
        chat("What is the refund policy?", tools=TOOLS),
        chat("What is the refund policy?", model="m2"),
        chat("What is the refund policy?", temperature=0.2),
        chat("What is the refund policy?", seed=42),
        chat("What is the refund policy?", response_format={"type": "json_object"}),
    ],
    ids=["system", "no-system", "tools", "model", "temperature", "seed", "format"],
)
async def test_a_different_context_never_shares(other: dict[str, Any]) -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("What is the refund policy?"))
    for request in (other, {**other, "messages": [*other["messages"][:-1],
                                                  {"role": "user", "content": "what is the refund policy"}]}):
        lookup = await look(cache, "t1", request, Embed())
        assert lookup.status == "miss" and lookup.reason == "no_candidate", lookup


async def test_no_cache_skips_the_lookup_but_stores() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("Where is my parcel?"), "old")
    embed = Embed()
    lookup = await look(cache, "t1", chat("Where is my parcel?"), embed, no_cache=True)
    assert (lookup.status, lookup.reason, lookup.storable) == ("bypass", "no_cache", True)
    assert embed.calls == []
    assert await cache.store(lookup, completion("new"))
    hit = await look(cache, "t1", chat("Where is my parcel?"), Embed())
    assert hit.response is not None and hit.response["choices"][0]["message"]["content"] == "new"


async def test_no_store_neither_looks_up_nor_stores() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("Where is my parcel?"))
    lookup = await look(cache, "t1", chat("Where is my parcel?"), Embed(), no_store=True)
    assert (lookup.status, lookup.reason) == ("bypass", "no_store")
    assert not await cache.store(lookup, completion())


@pytest.mark.parametrize(
    ("request_", "detail"),
    [(chat("hi there", temperature=0.9), "temperature"), (chat("hi there", n=3), "n")],
)
async def test_ineligible_requests_miss_and_are_not_stored(request_: dict[str, Any], detail: str) -> None:
    cache, _ = await make()
    lookup = await look(cache, "t1", request_, Embed())
    assert (lookup.status, lookup.reason, lookup.detail) == ("miss", "ineligible", detail)
    assert not await cache.store(lookup, completion())


async def test_per_model_and_per_tenant_switches() -> None:
    cache, _ = await make(models={"m2": CacheSwitch(enabled=False)},
                          tenants={"exact-only": CacheSwitch(semantic=False)})
    off = await look(cache, "t1", chat("hello", model="m2"), Embed())
    assert (off.status, off.reason) == ("bypass", "disabled")
    await remember(cache, "exact-only", chat("How do I reset my password?"))
    embed = Embed()
    miss = await look(cache, "exact-only", chat("how can i reset my password"), embed)
    assert (miss.status, miss.reason) == ("miss", "exact_only") and embed.calls == []
    assert (await look(cache, "exact-only", chat("How do I reset my password?"), embed)).status == "exact"


async def test_a_slow_embedding_is_a_miss_not_a_wait() -> None:
    cache, _ = await make(embed_timeout_s=0.02)
    await remember(cache, "t1", chat("How do I reset my password?"))
    release = asyncio.Event()

    async def slow(text: str) -> np.ndarray | None:
        await release.wait()
        return None

    lookup = await look(cache, "t1", chat("how can i reset my password"), slow)
    assert (lookup.status, lookup.reason) == ("miss", "embedding_timeout")
    assert lookup.elapsed_s < 1.0
    release.set()


async def test_a_failed_embedding_is_a_miss() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I reset my password?"))

    async def broken(text: str) -> np.ndarray | None:
        raise RuntimeError("model gone")

    lookup = await look(cache, "t1", chat("how can i reset my password"), broken)
    assert (lookup.status, lookup.reason) == ("miss", "embedding_failed")


async def test_unexpected_length_errors_and_empties_are_refused() -> None:
    cache, _ = await make()
    lookup = await look(cache, "t1", chat("Tell me a story"), Embed())
    before = metric("switchyard_cache_stores_total", outcome="refused:length")
    assert not await cache.store(lookup, completion(finish="length"))
    assert not await cache.store(lookup, {"error": {"message": "upstream failed"}})
    assert not await cache.store(lookup, completion(text=""))
    assert metric("switchyard_cache_stores_total", outcome="refused:length") == before + 1
    assert (await look(cache, "t1", chat("Tell me a story"), Embed())).status == "miss"


async def test_an_answer_longer_than_max_tokens_is_not_served() -> None:
    cache, _ = await make()
    lookup = await look(cache, "t1", chat("Explain DNS"), Embed())
    assert await cache.store(lookup, completion(completion_tokens=40))
    assert (await look(cache, "t1", chat("Explain DNS", max_tokens=100), Embed())).status == "exact"
    short = await look(cache, "t1", chat("Explain DNS", max_tokens=10), Embed())
    assert (short.status, short.reason) == ("miss", "max_tokens")


async def test_entries_expire_at_an_absolute_ttl() -> None:
    cache, clock = await make(ttl_s=60)
    await remember(cache, "t1", chat("How do I reset my password?"))
    clock.now += 50
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "exact"
    clock.now += 11  # 61 s after the store: the hit above did not extend it
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "miss"
    assert (await look(cache, "t1", chat("how can i reset my password"), Embed())).status == "miss"


async def test_the_size_cap_evicts_the_least_recently_used() -> None:
    cache, _ = await make(max_entries=2)
    before = metric("switchyard_cache_evictions_total", reason="lru")
    await remember(cache, "t1", chat("first question here"))
    await remember(cache, "t1", chat("second question here"))
    assert (await look(cache, "t1", chat("first question here"), Embed())).status == "exact"  # now most recent
    await remember(cache, "t1", chat("third question here"))
    assert (await look(cache, "t1", chat("second question here"), Embed())).status == "miss"
    assert (await look(cache, "t1", chat("first question here"), Embed())).status == "exact"
    assert (await look(cache, "t1", chat("third question here"), Embed())).status == "exact"
    assert metric("switchyard_cache_evictions_total", reason="lru") == before + 1
    assert cache.health()["entries"] == 2


async def test_a_contradicted_entry_tightens_then_goes() -> None:
    cache, _ = await make(max_contradictions=2)
    await remember(cache, "t1", chat("How do I reset my password?"))
    hit = await look(cache, "t1", chat("how can i reset my password"), Embed())
    assert hit.status == "semantic" and hit.similarity is not None
    await cache.report(hit, agreed=False)
    assert cache.false_hit_rate == 1.0
    again = await look(cache, "t1", chat("how can i reset my password"), Embed())
    assert (again.status, again.reason) == ("miss", "below_threshold")
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "exact"
    exact = await look(cache, "t1", chat("How do I reset my password?"), Embed())
    await cache.report(exact, agreed=False)  # an exact hit contradicted: not deterministic, the entry goes
    assert (await look(cache, "t1", chat("How do I reset my password?"), Embed())).status == "miss"


async def test_verify_compares_answers_and_exports_the_rate() -> None:
    cache, _ = await make(verify_sample_rate=1.0)
    await remember(cache, "t1", chat("How do I reset my password?"), "Use the reset link.")
    hit = await look(cache, "t1", chat("how can i reset my password"), Embed())
    assert cache.should_verify(hit)
    assert await cache.verify(hit, completion("Use  the reset link.")) is True
    assert cache.false_hit_rate == 0.0
    assert metric("switchyard_cache_false_hit_rate") == 0.0
    call = [{"id": "x", "type": "function", "function": {"name": "reset", "arguments": '{"user": "a"}'}}]
    assert await cache.verify(hit, completion("", tool_calls=call)) is False
    assert cache.false_hit_rate == 0.5
    assert metric("switchyard_cache_false_hit_rate") == 0.5
    miss = await look(cache, "t1", chat("Something else entirely"), Embed())
    assert not cache.should_verify(miss)
    assert await cache.verify(miss, completion()) is None


async def test_concurrent_lookups_share_one_partition_sync() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I reset my password?"))
    results = await asyncio.gather(*(look(cache, "t1", chat("how can i reset my password"), Embed())
                                     for _ in range(20)))
    assert {r.status for r in results} == {"semantic"}


async def test_health() -> None:
    cache, _ = await make()
    await remember(cache, "t1", chat("How do I reset my password?"))
    health = cache.health()
    assert health["store"] == "memory" and health["up"] is True and health["entries"] == 1
    assert health["bypassed"] == 0
