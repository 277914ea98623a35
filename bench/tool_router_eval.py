"""Tool router on BFCL (bfcl-eval) single-call queries: does the correct tool survive narrowing?

For each catalogue size, every query gets its correct tool plus random distractors (distinct names
drawn from the ~1,250 BFCL functions). Reported per size: recall of the correct tool in the kept set,
mean and p95 tools kept, classifier latency p50/p99 (the router embeds the intent itself, so the
embedding is included; measured right after the query's own catalogue was built, and again in steady
state with one catalogue reused for every query), and the fallback rate. The baseline, measured
in the same run on the same catalogues, is zero-shot all-MiniLM-L6-v2 over name + description +
JSON parameters at a fixed top 5 and top 10. An ablation at the largest size adds one scoring
part at a time at a fixed k = 10.

Feedback run: one fixed 741-tool catalogue; half the queries of each repeated tool are replayed as
observed tool calls, the other half measured at a fixed k before and after (plus queries whose
tool was never observed, which must not get worse, and another tenant, who must see no change).

Queries are split in two halves by a hash of their id: defaults were tuned on `--split tune`, the
report uses `--split heldout`.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.tool_router_eval [--split heldout] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cache.embedder import SentenceEmbedder
from router import RouterSettings, ToolRouter

CATEGORIES = ("simple_python", "simple_java", "simple_javascript", "multiple", "live_simple", "live_multiple")


@dataclass(frozen=True)
class Query:
    id: str
    messages: list[dict[str, Any]]
    name: str
    tool: dict[str, Any]  # the correct tool, OpenAI-shaped


def _openai_tool(function: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": function}


def load_bfcl() -> tuple[list[Query], dict[str, list[dict[str, Any]]]]:
    """Single-call queries with their correct tool; every distinct definition, grouped by name."""
    spec = importlib.util.find_spec("bfcl_eval")  # data files only: importing it pulls in its SDKs
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bfcl-eval is not installed: pip install bfcl-eval")
    root = Path(spec.submodule_search_locations[0]) / "data"
    queries: list[Query] = []
    definitions: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for category in CATEGORIES:
        answers = {}
        for line in (root / "possible_answer" / f"BFCL_v4_{category}.json").read_text().splitlines():
            record = json.loads(line)
            answers[record["id"]] = next(iter(record["ground_truth"][0]))
        for line in (root / f"BFCL_v4_{category}.json").read_text().splitlines():
            record = json.loads(line)
            for function in record["function"]:
                definitions[function["name"]][json.dumps(function, sort_keys=True)] = function
            name = answers[record["id"]]
            function = next(f for f in record["function"] if f["name"] == name)
            queries.append(Query(record["id"], record["question"][0], name, _openai_tool(function)))
    pool = {name: [_openai_tool(f) for f in defs.values()] for name, defs in sorted(definitions.items())}
    return queries, pool


def split_of(query: Query) -> str:
    return "tune" if int(hashlib.sha1(query.id.encode()).hexdigest(), 16) % 2 == 0 else "heldout"


Tool = dict[str, Any]


def catalogue(query: Query, pool: dict[str, list[Tool]], size: int, rng: random.Random) -> list[Tool]:
    """The correct tool plus distractors with other names, shuffled."""
    names = [n for n in pool if n != query.name]
    tools = [query.tool] + [rng.choice(pool[n]) for n in rng.sample(names, size - 1)]
    rng.shuffle(tools)
    return tools


class MemoEmbedder:
    """Remembers texts already embedded, so several routers share one embedding of each tool. With
    `single=False` a call with one text (an intent) always reaches the model, so it can be timed."""

    def __init__(self, inner: SentenceEmbedder, memo: dict[str, np.ndarray] | None = None, single: bool = True):
        self._inner = inner
        self._memo: dict[str, np.ndarray] = {} if memo is None else memo
        self._single = single

    def load(self, texts: list[str], vectors: np.ndarray) -> None:
        self._memo.update(zip(texts, vectors, strict=True))

    def dump(self) -> tuple[list[str], np.ndarray]:
        return list(self._memo), np.stack(list(self._memo.values()))

    def sharing(self, single: bool) -> MemoEmbedder:
        return MemoEmbedder(self._inner, self._memo, single)

    @property
    def dim(self) -> int:
        return self._inner.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1 and not self._single:
            return await self._inner.embed(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            self._memo.update(zip(chunk, await self._inner.embed(chunk), strict=True))
        return np.stack([self._memo[t] for t in texts])


def fixed_k(k: int, **overrides: Any) -> RouterSettings:
    return RouterSettings(min_keep=k, max_keep=k, widen_below=0.0, fallback_below=0.0, shadow_fraction=0.0, **overrides)


def _kept(narrowing: Any, name: str) -> bool:
    return any(t["function"]["name"] == name for t in narrowing.tools)


def _share(narrowings: list[Any], names: list[str]) -> float:
    return round(float(np.mean([_kept(n, name) for n, name in zip(narrowings, names, strict=True)])), 4)


async def run_sizes(
    embedder: MemoEmbedder, queries: list[Query], pool: dict[str, list[dict[str, Any]]], sizes: list[int], seed: int
) -> dict[str, Any]:
    router = ToolRouter(RouterSettings(shadow_fraction=0.0, feedback=False), embedder)
    await router.start()
    out: dict[str, Any] = {}
    for size in sizes:
        rng = random.Random(seed + size)
        hits, kept, latency, overhead, fallbacks = [], [], [], [], 0
        for query in queries:
            tools = catalogue(query, pool, size, rng)
            await router.prepare(tools)  # catalogue built once per tool list in production: not timed
            started = time.perf_counter()
            narrowing = await router.narrow("bench", tools, query.messages)
            latency.append(time.perf_counter() - started)
            if narrowing.vector is not None:  # again with the intent's vector given, as the gateway does
                started = time.perf_counter()
                await router.narrow("bench", tools, query.messages, query_vector=narrowing.vector)
                overhead.append(time.perf_counter() - started)
            hits.append(_kept(narrowing, query.name))
            kept.append(narrowing.tools_out)
            fallbacks += narrowing.fallback
        # Steady state: the last catalogue reused for every query, as an application that sends the same
        # tool list with each request does (no catalogue build between one query and the next).
        steady = []
        for query in queries:
            started = time.perf_counter()
            await router.narrow("bench", tools, query.messages)
            steady.append(time.perf_counter() - started)
        out[str(size)] = {
            "recall": round(float(np.mean(hits)), 4),
            "kept_mean": round(float(np.mean(kept)), 2),
            "kept_p95": float(np.percentile(kept, 95)),
            "latency_p50_ms": round(1000 * float(np.median(latency)), 2),
            "latency_p99_ms": round(1000 * float(np.percentile(latency, 99)), 2),
            "without_embedding_p50_ms": round(1000 * float(np.median(overhead)), 2) if overhead else None,
            "steady_latency_p50_ms": round(1000 * float(np.median(steady)), 2),
            "steady_latency_p99_ms": round(1000 * float(np.percentile(steady, 99)), 2),
            "fallback_rate": round(fallbacks / len(queries), 4),
        }
        print(f"size {size}: {out[str(size)]}", file=sys.stderr, flush=True)
    await router.aclose()
    return out


async def run_baseline(
    embedder: MemoEmbedder,
    queries: list[Query],
    pool: dict[str, list[dict[str, Any]]],
    sizes: list[int],
    seed: int,
    vectors: np.ndarray,
) -> dict[str, Any]:
    """Zero-shot MiniLM over `name description {parameters JSON}`, fixed top 5 and top 10."""

    def text(tool: dict[str, Any]) -> str:
        f = tool["function"]
        return f"{f['name']} {f.get('description', '')} {json.dumps(f.get('parameters', {}))}"

    out: dict[str, Any] = {}
    for size in sizes:
        rng = random.Random(seed + size)  # the same catalogues as run_sizes
        ranks = []
        for i, query in enumerate(queries):
            tools = catalogue(query, pool, size, rng)
            scores = (await embedder.embed([text(t) for t in tools])) @ vectors[i]
            correct = next(j for j, t in enumerate(tools) if t["function"]["name"] == query.name)
            ranks.append(int(np.sum(scores > scores[correct])))
        r = np.array(ranks)
        out[str(size)] = {"top5": round(float(np.mean(r < 5)), 4), "top10": round(float(np.mean(r < 10)), 4)}
    return out


async def run_ablation(
    embedder: MemoEmbedder,
    queries: list[Query],
    pool: dict[str, list[dict[str, Any]]],
    size: int,
    seed: int,
    vectors: np.ndarray,
) -> dict[str, Any]:
    variants = {
        "dense_full_text": fixed_k(10, description_weight=0.0, lexical_weight=0.0, feedback=False),
        "+description": fixed_k(10, lexical_weight=0.0, feedback=False),
        "+lexical": fixed_k(10, feedback=False),
    }
    out: dict[str, Any] = {}
    for label, settings in variants.items():
        router = ToolRouter(settings, embedder)
        rng = random.Random(seed + size)
        hits = []
        for i, query in enumerate(queries):
            tools = catalogue(query, pool, size, rng)
            await router.prepare(tools)
            hits.append(_kept(await router.narrow("bench", tools, query.messages, query_vector=vectors[i]), query.name))
        out[label] = round(float(np.mean(hits)), 4)
    return {"size": size, "k": 10, "recall": out}


async def run_feedback(
    embedder: MemoEmbedder,
    queries: list[Query],
    pool: dict[str, list[dict[str, Any]]],
    vectors: np.ndarray,
    k: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        by_name[query.name].append(i)
    repeated = [n for n, idx in by_name.items() if len(idx) >= 2]
    others = [n for n in pool if n not in set(repeated)]
    names = repeated + rng.sample(others, max(0, 741 - len(repeated)))
    tools = [pool[n][0] for n in names]
    for i in (j for n in repeated for j in by_name[n]):  # each query's own definition of its tool
        tools[names.index(queries[i].name)] = queries[i].tool
    rng.shuffle(tools)
    replay, seen, unseen = [], [], []
    for name in names:
        idx = by_name.get(name, [])
        if name in repeated:
            shuffled = rng.sample(idx, len(idx))
            replay += shuffled[: len(idx) // 2]
            seen += shuffled[len(idx) // 2 :]
        else:
            unseen += idx

    async def recall(router: ToolRouter, tenant: str, which: list[int]) -> float:
        hits = [
            _kept(await router.narrow(tenant, tools, queries[i].messages, query_vector=vectors[i]), queries[i].name)
            for i in which
        ]
        return round(float(np.mean(hits)), 4) if hits else float("nan")

    router = ToolRouter(fixed_k(k), embedder)
    adaptive = ToolRouter(RouterSettings(shadow_fraction=0.0), embedder)
    await router.start()
    await router.prepare(tools)
    await adaptive.prepare(tools)
    before = {"seen": await recall(router, "a", seen), "unseen": await recall(router, "a", unseen)}
    kept_before = [(await adaptive.narrow("a", tools, queries[i].messages, query_vector=vectors[i])) for i in seen]
    started = time.perf_counter()
    for i in replay:
        narrowing = await router.narrow("a", tools, queries[i].messages, query_vector=vectors[i])
        router.observe("a", narrowing, [queries[i].name])
    await router.flush()
    train_s = time.perf_counter() - started
    after = {"seen": await recall(router, "a", seen), "unseen": await recall(router, "a", unseen)}
    other_tenant = await recall(router, "b", seen)
    # The same examples through the adaptive router: fewer tools kept once it has learned.
    for i in replay:
        adaptive.observe(
            "a", await adaptive.narrow("a", tools, queries[i].messages, query_vector=vectors[i]), [queries[i].name]
        )
    await adaptive.flush()
    kept_after = [(await adaptive.narrow("a", tools, queries[i].messages, query_vector=vectors[i])) for i in seen]
    await router.aclose()
    await adaptive.aclose()
    return {
        "catalogue": len(tools),
        "k": k,
        "replayed": len(replay),
        "measured_seen": len(seen),
        "measured_unseen": len(unseen),
        "recall_before": before,
        "recall_after": after,
        "recall_gain_seen": round(after["seen"] - before["seen"], 4),
        "other_tenant_seen": other_tenant,
        "replay_and_train_s": round(train_s, 2),
        "adaptive_seen": {
            "recall_before": _share(kept_before, [queries[i].name for i in seen]),
            "recall_after": _share(kept_after, [queries[i].name for i in seen]),
            "kept_mean_before": round(float(np.mean([n.tools_out for n in kept_before])), 2),
            "kept_mean_after": round(float(np.mean([n.tools_out for n in kept_after])), 2),
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="heldout")
    parser.add_argument("--sizes", default="49,207,417,741")
    parser.add_argument("--limit", type=int, default=0, help="at most this many queries (0: all of the split)")
    parser.add_argument("--feedback-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: baseline, ablation, feedback")
    parser.add_argument("--vector-cache", type=Path, help="keep embedded texts in this .npz between runs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    skip = set(filter(None, args.skip.split(",")))

    all_queries, pool = load_bfcl()
    queries = [q for q in all_queries if args.split == "all" or split_of(q) == args.split]
    if args.limit:
        queries = random.Random(args.seed).sample(queries, min(args.limit, len(queries)))
    embedder = SentenceEmbedder()
    await embedder.start()
    memo = MemoEmbedder(embedder)
    if args.vector_cache and args.vector_cache.exists():
        with np.load(args.vector_cache) as cached:
            memo.load(cached["texts"].tolist(), cached["vectors"])
    started = time.perf_counter()
    warm = ToolRouter(RouterSettings(), memo)  # embeds every distinct tool once, into the memo
    await warm.prepare([t for defs in pool.values() for t in defs])
    vectors = await memo.embed([warm.intent_text(q.messages) for q in queries])
    print(
        f"{len(queries)} queries, {sum(map(len, pool.values()))} tool definitions embedded in "
        f"{time.perf_counter() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )

    summary: dict[str, Any] = {
        "bench": "tool_router_eval",
        "split": args.split,
        "queries": len(queries),
        "distinct_tool_names": len(pool),
    }
    summary["router"] = await run_sizes(memo.sharing(single=False), queries, pool, sizes, args.seed)
    if "baseline" not in skip:
        summary["baseline"] = await run_baseline(memo, queries, pool, sizes, args.seed, vectors)
    if "ablation" not in skip:
        summary["ablation"] = await run_ablation(memo, queries, pool, max(sizes), args.seed, vectors)
    if "feedback" not in skip:
        feedback_queries = all_queries if args.split == "all" else [q for q in all_queries if split_of(q) == args.split]
        feedback_vectors = await memo.embed([warm.intent_text(q.messages) for q in feedback_queries])
        summary["feedback"] = await run_feedback(
            memo, feedback_queries, pool, feedback_vectors, args.feedback_k, args.seed
        )
    top = summary["router"].get(str(max(sizes)), {})
    summary["goal_at_largest"] = {
        "recall>=0.98": top.get("recall", 0) >= 0.98,
        "kept_mean<=10": top.get("kept_mean", 99) <= 10,
        "latency_p50_ms<=15": top.get("latency_p50_ms", 99) <= 15,
    }
    if args.vector_cache:
        texts, rows = memo.dump()
        np.savez(args.vector_cache, texts=np.array(texts), vectors=rows)
    embedder.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
