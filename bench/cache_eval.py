"""Cache evaluation: how often the semantic cache serves a right answer, how often a wrong one, and
what a lookup costs.

Quality, on fow-cache (600 question pairs; 300 should hit, 300 traps) run through the real
`ResponseCache` (memory store, one tenant per pair, all-MiniLM-L6-v2 vectors) at the shipped
defaults, against plain cosine at the same thresholds. The guard's word lists and thresholds were
written and tuned looking at the "dev" half only (sha256(id) even); the "held_out" half was not
looked at while tuning, so its figures are the honest ones. Also fow-cache's conversation pairs,
where the scope partition (earlier turns) decides before any guard does.

Latency, same run: exact hit vs. the cheapest exact cache imaginable (hash the body, dict lookup);
semantic lookup (embedding included) vs. the embedding alone; a miss vs. a semantic lookup; when
redis-server is installed, the exact hit over Redis; and over HTTP, a real gateway (embedded
defaults, memory cache) in front of a sim whose first token takes 200 ms: time to the first content
token of a streamed miss, a streamed exact hit and a streamed semantic hit.

    .venv/bin/python -m bench.cache_eval [--quick]

The last line is one JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
import orjson

from bench.loadgen.processes import ManagedServer, free_port, sim_command
from cache import CacheSettings, MemoryStore, RedisStore, ResponseCache, SentenceEmbedder
from cache.keys import request_keys

SYSTEM = "You are a helpful assistant."


def is_dev(item_id: str) -> bool:
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 2 == 0


def request(text: str, history: list[dict[str, str]] | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, *(history or []), {"role": "user", "content": text}]
    return {"model": "m", "temperature": 0, "messages": messages}


def completion(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": "m",
        "usage": {"completion_tokens": 8},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def rates(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    hits = [r[key] for r in rows if r["same"]]
    traps = [r[key] for r in rows if not r["same"]]
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_cat[r["cat"]].append(r[key])
    return {
        "hit_rate": round(sum(hits) / max(len(hits), 1), 4),
        "wrong_rate": round(sum(traps) / max(len(traps), 1), 4),
        "wrong": int(sum(traps)),
        "n_hit": len(hits),
        "n_trap": len(traps),
        "by_category": {c: round(sum(v) / len(v), 4) for c, v in sorted(by_cat.items())},
    }


async def run_pairs(
    pairs: list[dict[str, Any]], vectors: dict[str, np.ndarray], settings: CacheSettings
) -> list[dict[str, Any]]:
    cache = ResponseCache(settings, MemoryStore(), None)
    await cache.start()

    async def embed(text: str) -> np.ndarray | None:
        return vectors[text]

    rows = []
    for p in pairs:
        tenant = p["id"]  # one partition per pair: nothing else competes
        first = await cache.lookup(tenant, request(p["a"]), embed)
        assert await cache.store(first, completion("cached answer"))
        second = await cache.lookup(tenant, request(p["b"]), embed)
        cos = float(vectors[p["a"]] @ vectors[p["b"]])
        cat = p["category"] + ("/" + p["style"] if p["category"] == "paraphrase" else "")
        rows.append(
            {
                "id": p["id"],
                "same": bool(p["same_answer"]),
                "cat": cat,
                "cos": cos,
                "served": second.hit,
                "reason": second.reason,
            }
        )
    await cache.aclose()
    return rows


def pctl(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q))


async def latency(embedder: SentenceEmbedder, texts: list[str], paraphrases: list[str], n: int) -> dict[str, Any]:
    # A generous embedding deadline: on a busy machine the shipped 50 ms would cut the timings short.
    settings = CacheSettings(embed_timeout_s=1.0)
    cache = ResponseCache(settings, MemoryStore(), embedder)
    await cache.start()

    async def embed(text: str) -> np.ndarray | None:
        return await embedder.embed_one(text, timeout=1.0)

    for text in texts:  # one partition with every cached question in it
        lookup = await cache.lookup("bench", request(text), embed)
        await cache.store(lookup, completion("answer " + text))
    out: dict[str, Any] = {"entries": len(texts)}

    # exact hit vs the cheapest exact cache: hash the JSON body, look it up in a dict
    body = request(texts[0])
    table = {hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(): completion("x")}
    base, exact = [], []
    for _ in range(n * 5):
        t = time.perf_counter()
        _ = table.get(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        hit = await cache.lookup("bench", body, embed)
        exact.append(time.perf_counter() - t)
        assert hit.status == "exact"
    out["exact_hit_p50_ms"] = round(pctl(exact, 50) * 1e3, 4)
    out["exact_baseline_p50_ms"] = round(pctl(base, 50) * 1e3, 4)
    out["exact_hit_added_p50_ms"] = round((pctl(exact, 50) - pctl(base, 50)) * 1e3, 4)

    # semantic lookups (embedding included) vs the embedding alone, interleaved so noise hits both
    emb_only: list[float] = []
    semantic: list[float] = []
    misses: list[float] = []
    statuses: dict[str, int] = defaultdict(int)
    unrelated = [
        f"Write a limerick about a {w} who learns {x}"
        for w, x in zip(
            ["cat", "dog", "fox", "owl", "yak"] * 40, ["chess", "jazz", "rust", "tax", "yoga"] * 40, strict=True
        )
    ]
    for i in range(n):
        text = paraphrases[i % len(paraphrases)] + " " * (i // len(paraphrases))  # defeat any memo
        t = time.perf_counter()
        await embedder.embed_one(text + " ", timeout=1.0)
        emb_only.append(time.perf_counter() - t)
        t = time.perf_counter()
        lookup = await cache.lookup("bench", request(text), embed)
        semantic.append(time.perf_counter() - t)
        statuses[lookup.status] += 1
        t = time.perf_counter()
        miss = await cache.lookup("bench", request(unrelated[i % len(unrelated)] + " " * i), embed)
        misses.append(time.perf_counter() - t)
        statuses["miss:" + str(miss.reason)] += 1
    out["embedding_p50_ms"] = round(pctl(emb_only, 50) * 1e3, 3)
    out["semantic_lookup_p50_ms"] = round(pctl(semantic, 50) * 1e3, 3)
    out["semantic_lookup_p90_ms"] = round(pctl(semantic, 90) * 1e3, 3)
    out["semantic_over_embedding_p50"] = round(pctl(semantic, 50) / pctl(emb_only, 50), 3)
    out["miss_lookup_p50_ms"] = round(pctl(misses, 50) * 1e3, 3)
    out["miss_over_semantic_p50"] = round(pctl(misses, 50) / pctl(semantic, 50), 3)
    out["statuses"] = dict(statuses)
    await cache.aclose()
    return out


async def redis_latency(n: int) -> dict[str, Any] | None:
    if shutil.which("redis-server") is None:
        return None
    from tests.support.processes import RedisServer

    server = RedisServer().start()
    try:
        settings = CacheSettings(store="redis", redis_url=server.url)
        cache = ResponseCache(settings, RedisStore(server.url, ttl_s=settings.ttl_s), None)
        await cache.start()
        body = request("How do I reset my password?")
        first = await cache.lookup("bench", body)
        await cache.store(first, completion("Use the link."))
        samples = []
        for _ in range(n * 5):
            t = time.perf_counter()
            hit = await cache.lookup("bench", body)
            samples.append(time.perf_counter() - t)
            assert hit.status == "exact"
        await cache.aclose()
        return {"redis_exact_hit_p50_ms": round(pctl(samples, 50) * 1e3, 4)}
    finally:
        server.stop()


async def _first_token(client: httpx.AsyncClient, text: str) -> tuple[float, str]:
    """Seconds to the first content token of a streamed request, and its cache status."""
    body = {**request(text), "model": "sim-model", "stream": True}
    started = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = orjson.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - started
        status = resp.headers.get("x-switchyard-cache", "none")
    return (first if first is not None else float("nan")), status


async def streamed_hits(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Per pair (a question, and a rewording the guards let through): a streamed miss on `a`, then
    `b` (a semantic hit) and `a` again (an exact hit), through a real gateway process."""
    sim_port = free_port()
    sim_flags = ("--models", "sim-model", "--ttft-ms", "200", "--itl-ms", "2", "--output-tokens", "24")
    with ManagedServer(sim_command(sim_port, *sim_flags), sim_port) as sim:
        port = free_port()
        serve = [sys.executable, "-m", "gateway", "serve", "--upstream", sim.url, "--port", str(port)]
        with ManagedServer(serve, port, ready_path="/readyz", timeout_s=180) as gateway:
            by_status: dict[str, list[float]] = defaultdict(list)
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
                for a, b in pairs:
                    for text in (a, b, a):
                        ttft, status = await _first_token(client, text)
                        by_status[status].append(ttft * 1e3)
    return {
        "requests": {k: len(v) for k, v in sorted(by_status.items())},
        **{f"{k}_ttft_p50_ms": round(statistics.median(v), 2) for k, v in sorted(by_status.items())},
        **{f"{k}_ttft_p90_ms": round(pctl(v, 90), 2) for k, v in sorted(by_status.items())},
    }


def conversations(settings: CacheSettings) -> dict[str, Any]:
    """Conversation pairs: served only when the earlier turns match exactly (the scope partition)."""
    import fow_cache  # type: ignore[import-untyped]  # ships no type information

    from cache.guards import check
    from cache.vocabulary import load_vocabulary

    vocab = load_vocabulary()
    rows = []
    for item in fow_cache.load_conversations():
        a, b = item["a"], item["b"]
        ka = request_keys("t", {"model": "m", "temperature": 0, "messages": a})
        kb = request_keys("t", {"model": "m", "temperature": 0, "messages": b})
        served = False
        if ka.scope is not None and ka.scope == kb.scope and ka.text and kb.text:
            served = check(kb.text, ka.text, 1.0, vocabulary=vocab, policy=settings.guards.policy()).ok
        label = bool(item["same_answer"]) if not item.get("ambiguous") else False
        rows.append({"same": label, "cat": item["subtype"], "served": served})
    return rates(rows, "served")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer latency samples")
    args = parser.parse_args()
    import fow_cache

    pairs = fow_cache.load_questions()
    embedder = SentenceEmbedder()
    await embedder.start()
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    started = time.perf_counter()
    matrix = await embedder.embed(texts)
    vectors = dict(zip(texts, matrix, strict=True))
    embed_all_s = time.perf_counter() - started

    settings = CacheSettings()
    rows = await run_pairs(pairs, vectors, settings)
    g = settings.guards
    thresholds = sorted({g.same, g.soft, g.reworded})
    for t in thresholds:
        for r in rows:
            r[f"cos@{t}"] = r["cos"] >= t

    quality: dict[str, Any] = {}
    for split, sel in (
        ("all", rows),
        ("dev", [r for r in rows if is_dev(r["id"])]),
        ("held_out", [r for r in rows if not is_dev(r["id"])]),
    ):
        quality[split] = {
            "guarded": rates(sel, "served"),
            **{f"plain_cosine@{t}": rates(sel, f"cos@{t}") for t in thresholds},
        }
    # plain cosine's own best: the lowest threshold with wrong hits <= 1% (picked on all data: optimistic)
    best = None
    for t in sorted({round(r["cos"], 4) for r in rows}):
        traps = [r["cos"] >= t for r in rows if not r["same"]]
        if sum(traps) / len(traps) <= 0.01:
            hits = [r["cos"] >= t for r in rows if r["same"]]
            best = {
                "threshold": t,
                "hit_rate": round(sum(hits) / len(hits), 4),
                "wrong_rate": round(sum(traps) / len(traps), 4),
            }
            break
    reasons: dict[str, int] = defaultdict(int)
    for r in rows:
        if not r["served"] and not r["same"]:
            reasons[str(r["reason"])] += 1

    n = 60 if args.quick else 200
    lat = await latency(
        embedder, [p["a"] for p in pairs if p["same_answer"]][:300], [p["b"] for p in pairs if p["same_answer"]], n
    )
    red = await redis_latency(n)
    served = [(p["a"], p["b"]) for p, r in zip(pairs, rows, strict=True) if r["served"]]
    http = await streamed_hits(served[: 15 if args.quick else 40])
    conv = conversations(settings)

    for split in ("all", "held_out"):
        q = quality[split]
        print(
            f"[{split}] guarded: hit {q['guarded']['hit_rate']:.1%}  wrong {q['guarded']['wrong_rate']:.1%} "
            f"({q['guarded']['wrong']}/{q['guarded']['n_trap']})"
        )
        for t in thresholds:
            c = q[f"plain_cosine@{t}"]
            print(f"[{split}] plain cosine @ {t}: hit {c['hit_rate']:.1%}  wrong {c['wrong_rate']:.1%}")
            print(f"[{split}]   by category (plain cosine @ {t}): {c['by_category']}")
        print(f"[{split}] by category (guarded): {q['guarded']['by_category']}")
    print(f"plain cosine needs {best} for <=1% wrong")
    print(f"traps stopped by: {dict(reasons)}")
    print(f"conversations: {conv}")
    print(f"latency: {lat}")
    if red:
        print(f"redis: {red}")
    print(f"streamed over HTTP (sim TTFT 200 ms): {http}")
    summary = {
        "bench": "cache_eval",
        "defaults": g.model_dump(),
        "hit_rate": quality["all"]["guarded"]["hit_rate"],
        "wrong_rate": quality["all"]["guarded"]["wrong_rate"],
        "held_out_hit_rate": quality["held_out"]["guarded"]["hit_rate"],
        "held_out_wrong_rate": quality["held_out"]["guarded"]["wrong_rate"],
        "dev_hit_rate": quality["dev"]["guarded"]["hit_rate"],
        "dev_wrong_rate": quality["dev"]["guarded"]["wrong_rate"],
        "by_category": quality["all"]["guarded"]["by_category"],
        "plain_cosine": {
            str(t): {k: quality["all"][f"plain_cosine@{t}"][k] for k in ("hit_rate", "wrong_rate", "by_category")}
            for t in thresholds
        },
        "plain_cosine_best_at_1pct": best,
        "conversations": {k: conv[k] for k in ("hit_rate", "wrong_rate", "by_category")},
        "goal_met": quality["all"]["guarded"]["wrong_rate"] <= 0.01 and quality["all"]["guarded"]["hit_rate"] >= 0.5,
        "latency": {k: v for k, v in lat.items() if k != "statuses"} | (red or {}),
        "embed_1200_texts_s": round(embed_all_s, 2),
        "exact_hit_goal_met": lat["exact_hit_added_p50_ms"] <= 1.0,
        "semantic_p50_goal_met": lat["semantic_lookup_p50_ms"] <= 15.0,
        "streamed_http": http,
        "streamed_hit_ttft_goal_met": all(
            http.get(f"{k}_ttft_p50_ms", float("inf")) <= 20.0 for k in ("exact", "semantic")
        ),
    }
    embedder.close()
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    asyncio.run(main())
