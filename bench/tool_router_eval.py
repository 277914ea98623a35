"""Tool router on every tool set, leave-one-set-out, with a feedback replay: is the called tool kept?

Sets (bench/eval_data.py): BFCL's synthetic Python queries, its Java and JavaScript ones, and its
"live" queries (real users, ~270 tools, most called many times). Each set is one catalogue: all of
its tools, as a deployment sends the same list with every request. Its queries split by a hash of
their id: 30 % test, 70 % feedback (replayed as observed tool calls).

Per held-out set, on its test queries:
- zero-shot: the router with the cold margin calibrated on the *other* sets only (untuned), and on
  all sets including it (tuned): recall, tools kept, empirical coverage against 1 - alpha;
- after feedback: the feedback queries replayed as observed calls (narrow, then observe), learning,
  then the test queries again: the router blends its feedback model only where it beats zero-shot
  on held-back calls, and calibrates the margin on them;
- another tenant after that feedback (no change allowed);
- the naive baseline: a 5-shot logistic regression (5 feedback calls per tool) blended with
  zero-shot at a fixed 10 tools.
Latency: narrowing a 741-tool catalogue with the intent's vector given (the gateway embeds once for
cache and router), zero-shot and with a feedback model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.tool_router_eval [--vector-cache F.npz]
    .venv/bin/python -m bench.tool_router_eval --write-calibration router/calibration.json

The last line is one JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.eval_data import TOOL_SETS, Query, fraction, tool_queries
from cache.embedder import SentenceEmbedder
from gateway.intent import intent_text
from router import RouterSettings, ToolRouter
from router.conformal import ColdCalibration, gap
from router.lexical import words

Tool = dict[str, Any]
COVERAGE = 0.98


class MemoEmbedder:
    """Remembers texts already embedded, so every router shares one embedding of each tool."""

    def __init__(self, inner: SentenceEmbedder):
        self._inner = inner
        self._memo: dict[str, np.ndarray] = {}

    def load(self, path: Path) -> None:
        with np.load(path) as cached:
            self._memo.update(zip(cached["texts"].tolist(), cached["vectors"], strict=True))

    def save(self, path: Path) -> None:
        np.savez(path, texts=np.array(list(self._memo)), vectors=np.stack(list(self._memo.values())))

    @property
    def dim(self) -> int:
        return self._inner.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            self._memo.update(zip(chunk, await self._inner.embed(chunk), strict=True))
        return np.stack([self._memo[t] for t in texts])


def catalogue_of(queries: list[Query]) -> list[Tool]:
    """One definition per tool name, in a seeded order."""
    tools = {q.name: q.tool for q in sorted(queries, key=lambda q: q.id)}
    ordered = sorted(tools.values(), key=lambda t: fraction(t["function"]["name"], "order"))
    return ordered


def kept(narrowing: Any, name: str) -> bool:
    return any(t["function"]["name"] == name for t in narrowing.tools)


async def zero_shot_gaps(embedder: MemoEmbedder, queries: list[Query], tools: list[Tool],
                         vectors: dict[str, np.ndarray]) -> list[float]:
    """Each query's gap (best score minus its tool's score) under the zero-shot scorer."""
    settings = RouterSettings(feedback=False, shadow_fraction=0.0, margin=1e9, min_keep=1, max_keep=len(tools))
    router = ToolRouter(settings, embedder)
    catalogue = await router._catalogue(tools, embed_all=True)  # the bench reads the scores directly
    assert catalogue is not None
    names = catalogue.identity.names
    out = []
    for q in queries:
        text = intent_text(q.messages)
        scores = catalogue.scores(vectors[text], words(text), settings.description_weight, settings.lexical_weight)
        out.append(gap(scores, names.index(q.name)))
    return out


async def measure(router: ToolRouter, tenant: str, tools: list[Tool], queries: list[Query],
                  vectors: dict[str, np.ndarray]) -> dict[str, Any]:
    await router.prepare(tools)  # built once per tool list in production: never a "warming" pass-through here
    hits, sizes = [], []
    for q in queries:
        text = intent_text(q.messages)
        n = await router.narrow(tenant, tools, q.messages, query_vector=vectors[text], intent=text)
        hits.append(kept(n, q.name))
        sizes.append(n.tools_out)
    return {"recall": round(float(np.mean(hits)), 4), "kept_mean": round(float(np.mean(sizes)), 2),
            "kept_p95": float(np.percentile(sizes, 95)), "queries": len(queries)}


def naive_baseline(tools: list[Tool], feedback: list[Query], test: list[Query], vectors: dict[str, np.ndarray],
                   zero_shot: dict[str, np.ndarray], k: int = 10, shots: int = 5) -> float:
    """5-shot logistic regression (probabilities) plus zero-shot scores, top k: the issue's baseline."""
    from sklearn.linear_model import LogisticRegression

    names = [t["function"]["name"] for t in tools]
    per: dict[str, list[np.ndarray]] = defaultdict(list)
    for q in feedback:
        if len(per[q.name]) < shots:
            per[q.name].append(vectors[intent_text(q.messages)])
    x = np.stack([v for vs in per.values() for v in vs])
    y = [n for n, vs in per.items() for _ in vs]
    if len(set(y)) < 2:
        return float("nan")
    model = LogisticRegression(C=16.0, max_iter=500).fit(x, y)
    column = {c: i for i, c in enumerate(model.classes_)}
    hits = []
    for q in test:
        text = intent_text(q.messages)
        probability = model.predict_proba(vectors[text][None, :])[0]
        scores = zero_shot[q.id] + np.array([probability[column[n]] if n in column else 0.0 for n in names])
        hits.append(names.index(q.name) in np.argsort(-scores)[:k])
    return round(float(np.mean(hits)), 4)


async def held_out(embedder: MemoEmbedder, name: str, sets: dict[str, list[Query]], vectors: dict[str, np.ndarray],
                   gaps: dict[str, list[float]], coverage: float, calibration_dir: Path) -> dict[str, Any]:
    queries = sets[name]
    tools = catalogue_of(queries)
    test = [q for q in queries if fraction(q.id, "test") < 0.3]
    feedback = [q for q in queries if fraction(q.id, "test") >= 0.3]
    out: dict[str, Any] = {"tools": len(tools), "test": len(test), "feedback": len(feedback)}
    others = [n for n in sets if n != name]
    for label, trained_on in (("untuned", others), ("tuned", list(sets))):
        cold = ColdCalibration(tuple(g for n in trained_on for g in gaps[n]), tuple(trained_on), 0.5, 0.4)
        path = calibration_dir / f"{name}-{label}.json"
        path.write_text(cold.to_json())
        settings = RouterSettings(calibration=str(path), coverage=coverage, shadow_fraction=0.0, feedback=False)
        router = ToolRouter(settings, embedder)
        out[f"zero_shot_{label}"] = await measure(router, "a", tools, test, vectors) | {
            "margin": round(cold.margin(coverage), 4)}
    # feedback replay on this catalogue, the cold margin from the other sets only
    settings = RouterSettings(calibration=str(calibration_dir / f"{name}-untuned.json"), coverage=coverage,
                              shadow_fraction=0.0)
    router = ToolRouter(settings, embedder)
    await router.start()
    await router.prepare(tools)
    started = time.perf_counter()
    for q in feedback:
        text = intent_text(q.messages)
        n = await router.narrow("a", tools, q.messages, query_vector=vectors[text], intent=text)
        router.observe("a", n, [q.name])
    await router.flush()
    out["replay_and_train_s"] = round(time.perf_counter() - started, 2)
    catalogue = await router._catalogue(tools, embed_all=True)
    assert catalogue is not None
    model = router._book.model("a", catalogue.id)
    out["feedback_model"] = None if model is None else {
        "blend": model.blend, "margin": None if model.margin is None else round(model.margin, 4),
        "held_back": model.held_back}
    out["after_feedback"] = await measure(router, "a", tools, test, vectors)
    out["other_tenant"] = await measure(router, "b", tools, test, vectors)
    await router.aclose()
    zero = {}
    names = catalogue.identity.names
    for q in test:
        text = intent_text(q.messages)
        zero[q.id] = catalogue.scores(vectors[text], words(text), 0.5, 0.4)
    del names
    out["naive_5shot_top10"] = naive_baseline(tools, feedback, test, vectors, zero)
    after, untuned = out["after_feedback"], out["zero_shot_untuned"]
    out["coverage_error"] = round(after["recall"] - coverage, 4)
    out["goals"] = {
        "recall_after>=0.95": after["recall"] >= 0.95,
        "kept_mean_after<=12": after["kept_mean"] <= 12,
        "after>=zero_shot": after["recall"] >= untuned["recall"],
        "coverage_within_1pt": abs(after["recall"] - coverage) <= 0.01,
        "other_tenant_unchanged": all(out["other_tenant"][k] == untuned[k] for k in ("recall", "kept_mean")),
    }
    print(f"[{name}] {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


async def latency(embedder: MemoEmbedder, pool: list[Tool], queries: list[Query], vectors: dict[str, np.ndarray],
                  size: int = 741, n: int = 200) -> dict[str, Any]:
    rng = random.Random(0)
    tools = rng.sample(pool, min(size, len(pool)))
    names = {t["function"]["name"] for t in tools}
    inside = [q for q in queries if q.name in names]
    router = ToolRouter(RouterSettings(shadow_fraction=0.0), embedder)
    await router.start()
    await router.prepare(tools)

    async def timed() -> float:
        samples = []
        for i in range(n):
            q = inside[i % len(inside)]
            text = intent_text(q.messages)
            started = time.perf_counter()
            await router.narrow("a", tools, q.messages, query_vector=vectors[text], intent=text)
            samples.append(time.perf_counter() - started)
        return round(1000 * float(np.median(samples)), 3)

    zero_shot = await timed()
    for q in inside:  # give the catalogue a feedback model, blended or not
        text = intent_text(q.messages)
        router.observe("a", await router.narrow("a", tools, q.messages, query_vector=vectors[text], intent=text),
                       [q.name])
    await router.flush()
    with_model = await timed()
    await router.aclose()
    return {"tools": len(tools), "narrow_p50_ms": zero_shot, "narrow_with_feedback_model_p50_ms": with_model}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage", type=float, default=COVERAGE)
    parser.add_argument("--vector-cache", type=Path, help="keep embedded texts in this .npz between runs")
    parser.add_argument("--write-calibration", type=Path, help="write the cold calibration of all sets here, stop")
    args = parser.parse_args()
    sets = {name: tool_queries(name) for name in TOOL_SETS}
    embedder = SentenceEmbedder()
    await embedder.start()
    memo = MemoEmbedder(embedder)
    if args.vector_cache and args.vector_cache.exists():
        memo.load(args.vector_cache)
    texts = sorted({intent_text(q.messages) for qs in sets.values() for q in qs})
    vectors = dict(zip(texts, await memo.embed(texts), strict=True))
    gaps = {name: await zero_shot_gaps(memo, qs, catalogue_of(qs), vectors) for name, qs in sets.items()}
    if args.vector_cache:
        memo.save(args.vector_cache)  # every text embedded by now: later runs skip the model
    if args.write_calibration:
        cold = ColdCalibration(tuple(g for gs in gaps.values() for g in gs), tuple(sets), 0.5, 0.4)
        args.write_calibration.write_text(cold.to_json() + "\n")
        print(json.dumps({"bench": "tool_router_eval", "wrote": str(args.write_calibration),
                          "margin": cold.margin(args.coverage), "gaps": len(cold.gaps)}))
        embedder.close()
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = {name: await held_out(memo, name, sets, vectors, gaps, args.coverage, Path(tmp)) for name in sets}
    pool = [t for qs in sets.values() for t in catalogue_of(qs)]
    lat = await latency(memo, pool, [q for qs in sets.values() for q in qs], vectors)
    if args.vector_cache:
        memo.save(args.vector_cache)
    embedder.close()
    summary = {
        "bench": "tool_router_eval",
        "coverage": args.coverage,
        "held_out": report,
        "latency": lat,
        "latency_goal_met": lat["narrow_with_feedback_model_p50_ms"] <= 15 and lat["narrow_p50_ms"] <= 15,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
