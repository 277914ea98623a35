"""`python -m bench.soak`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from bench.soak.drive import STAGES, soak
from bench.vllm_cpu import MODEL_NAME

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rps", type=float, default=20.0, help="arrival rate (Poisson)")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--timeout", type=float, default=60.0, help="client deadline per request, seconds")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--engine-model", help="a model directory or bundled:smollm2-135m-instruct; default: a tiny Llama")
    p.add_argument("--no-redis", action="store_true", help="keep cache, limits and router state in memory")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stages", choices=sorted(STAGES), default="all", help="which pipeline stages run (to bisect)")
    p.add_argument(
        "--trace-memory", action="store_true", help="tracemalloc in the gateway: which lines grew after warm-up"
    )
    p.add_argument(
        "--memory-stats",
        action="store_true",
        help="without tracemalloc: the gateway's RSS, glibc heap and object counts every 30 s",
    )
    p.add_argument(
        "--responses-ttl", type=float, default=120.0, help="seconds a stored response is kept (expires within the run)"
    )
    p.add_argument("--no-traces", action="store_true", help="no span export (default: OTLP/HTTP to a local sink)")
    p.add_argument("--trace-ratio", type=float, default=0.25, help="head sampling: share of traces kept")
    vllm = p.add_mutually_exclusive_group()
    vllm.add_argument("--vllm-url", help="a running vLLM OpenAI server (its root or /v1): a `type: vllm` backend")
    vllm.add_argument("--vllm", action="store_true", help="start one (bench.vllm_cpu, the bundled SmolLM2; minutes)")
    p.add_argument("--vllm-model", default=MODEL_NAME, help="the model the vLLM server serves")
    args = p.parse_args(argv)
    summary = asyncio.run(soak(args))
    print(json.dumps(summary))
