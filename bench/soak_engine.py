"""Soak the local engine: steady load for --minutes, resident memory sampled throughout.

Closed-loop clients keep the pool busy with a mix of requests: greedy and sampled, some with stop
strings, some abandoned after a few tokens (so aborts are exercised), prompts and outputs of varied
lengths. Every --sample-seconds the resident set size of the gateway-side process and of every
worker is recorded. Memory counts as flat when the median of the last tenth of the run is within
5 % of the median of the second tenth (the first tenth is warm-up: caches and allocator pools fill).

    .venv/bin/python -m bench.soak_engine --minutes 10
    .venv/bin/python -m bench.soak_engine --minutes 1 --clients 4     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from typing import Any

from bench.measure import rss_mb

os.environ.setdefault("HF_HUB_OFFLINE", "1")

def flatness(samples: list[float]) -> dict[str, float]:
    tenth = max(1, len(samples) // 10)
    early = statistics.median(samples[tenth : 2 * tenth])
    late = statistics.median(samples[-tenth:])
    return {
        "early_mb": round(early, 1),
        "late_mb": round(late, 1),
        "max_mb": round(max(samples), 1),
        "growth_pct": round(100 * (late - early) / early, 2),
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    from batching import (
        EngineError,
        EngineOverloaded,
        EngineSettings,
        GenerationRequest,
        SamplingParams,
        WorkerPool,
    )

    pool = WorkerPool(
        EngineSettings(
            model=args.model,
            devices=["cpu"],
            max_num_seqs=args.max_seqs,
            max_num_batched_tokens=args.max_batch_tokens,
            kv_cache_memory_mb=args.kv_mb,
        )
    )
    await pool.start()
    counts = {"completed": 0, "abandoned": 0, "overloaded": 0, "errors": 0, "tokens": 0}
    deadline = time.monotonic() + args.minutes * 60
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "with",
        "was",
        "on",
        "be",
        "by",
        "this",
        "are",
        "from",
        "at",
        "or",
        "an",
        "engine",
        "batch",
        "token",
        "model",
    ]

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 160)))
            prompt = pool.render_chat([{"role": "user", "content": text}])
            greedy = rng.random() < 0.5
            params = SamplingParams(
                temperature=0.0 if greedy else 0.8,
                top_p=0.95,
                seed=rng.randrange(1 << 30),
                max_tokens=rng.randint(16, 128),
                stop=["\n\n"] if rng.random() < 0.3 else (),
                ignore_eos=rng.random() < 0.5,
            )
            abandon_after = rng.randint(1, 8) if rng.random() < 0.15 else None
            try:
                received = 0
                async for out in pool.generate(GenerationRequest(prompt, params)):
                    received += len(out.token_ids)
                    if abandon_after is not None and received >= abandon_after:
                        counts["abandoned"] += 1
                        break
                else:
                    counts["completed"] += 1
                counts["tokens"] += received
            except EngineOverloaded:
                counts["overloaded"] += 1
            except EngineError:
                counts["errors"] += 1

    main_rss: list[float] = []
    worker_rss: list[float] = []
    pids = [w["pid"] for w in pool.stats()["workers"]]

    async def sampler() -> None:
        while time.monotonic() < deadline:
            main_rss.append(rss_mb(os.getpid()))
            worker_rss.append(sum(rss_mb(p) for p in pids))
            await asyncio.sleep(args.sample_seconds)  # the sampling period, not a synchronisation

    started = time.monotonic()
    try:
        await asyncio.gather(sampler(), *(client(i) for i in range(args.clients)))
    finally:
        await pool.aclose()
    elapsed = time.monotonic() - started
    main, workers = flatness(main_rss), flatness(worker_rss)
    return {
        "bench": "soak_engine",
        "minutes": args.minutes,
        "clients": args.clients,
        **counts,
        "output_tok_s": round(counts["tokens"] / elapsed, 2),
        "samples": len(worker_rss),
        "worker_rss": workers,
        "main_rss": main,
        "rss_flat_within_5pct": abs(workers["growth_pct"]) <= 5 and abs(main["growth_pct"]) <= 5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--max-seqs", type=int, default=16)
    parser.add_argument("--max-batch-tokens", type=int, default=256)
    parser.add_argument("--kv-mb", type=int, default=512)
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    args = parser.parse_args()
    summary = asyncio.run(soak(args))
    print(json.dumps(summary["worker_rss"]), json.dumps(summary["main_rss"]), file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
