"""The gateway in front of two vLLM CPU replicas: prefix-aware routing against least-outstanding and
round-robin on the same traffic, in one run.

    python -m bench.fleet [--urls http://127.0.0.1:8101,http://127.0.0.1:8102] [--conversations 12]

Traffic: multi-turn chats whose every turn carries the whole conversation so far. Each
conversation opens with a long system prompt, about 1,000 tokens: instructions shared by every
conversation of its persona (two personas) and a document of its own. Conversations arrive as a
Poisson process; within one, a turn is sent when the previous answer has arrived.

Each balancer gets its own gateway process and traffic of the same shape (arrival times, lengths,
outputs) but different words, never sent before (a fresh salt each run), so that no balancer finds
prefixes an earlier one, or an earlier run, left in vLLM's cache. Reported per balancer: TTFT
p50/p99, output tokens per second over the run, vLLM's own prefix-cache hit rate (hits / queried
prompt tokens, summed over the replicas) and the prefix balancer's decisions. Without `--urls`
the bench starts two vLLM servers itself (minutes).
The last line is the JSON summary, with ratios against least-outstanding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.chat_load import TurnRefused, stream_turn
from bench.loadgen.processes import ManagedServer, free_port
from bench.measure import percentile
from bench.vllm_cpu import MODEL_NAME, VllmServer

__all__ = ["main"]

BALANCERS = ("prefix", "least_outstanding", "round_robin")
_VOCABULARY = (
    "train station ticket platform delay route city river bridge north south morning evening weather report "
    "market price energy water system model answer question reason simple careful detail summary customer "
    "invoice refund policy contract clause warranty shipping order account balance schedule meeting"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class Conversation:
    arrival: float  # seconds after the start
    system: str
    turns: list[str]
    output_tokens: list[int]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def workload(n: int, turns: int, rate: float, shape_seed: int, text_seed: int) -> list[Conversation]:
    """`n` conversations arriving at `rate` per second. The shape (arrivals, lengths, outputs)
    depends on `shape_seed` only; the words on `text_seed`."""
    shape, text = random.Random(shape_seed), random.Random(text_seed)
    personas = [f"You are assistant {p} of a support desk. " + _words(text, 160) for p in ("A", "B")]
    at = 0.0
    out = []
    for i in range(n):
        at += shape.expovariate(rate)
        document = _words(text, 600)  # ~800 tokens with the persona: the conversation's own prefix
        system = personas[i % 2] + "\nThe customer's file:\n" + document
        lengths = [shape.randint(6, 30) for _ in range(turns)]
        out.append(Conversation(at, system, [_words(text, k) for k in lengths],
                                [shape.randint(8, 24) for _ in range(turns)]))
    return out


@dataclass
class Run:
    ttft: list[float]
    output_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _turn(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], tokens: int, run: Run) -> str:
    try:
        answer = await stream_turn(client, url, MODEL_NAME, messages, tokens)
    except TurnRefused as refused:
        run.error(f"http {refused.status}: {refused.body[:120].decode(errors='replace')}")
        return ""
    for error in answer.errors:
        run.error(f"stream: {error[:120]}")
    run.output_tokens += answer.completion_tokens
    run.ttft.append(answer.ttft)
    return answer.text


async def drive(url: str, conversations: list[Conversation]) -> tuple[Run, float]:
    run = Run([])

    async def converse(client: httpx.AsyncClient, conv: Conversation, start: float) -> None:
        await asyncio.sleep(max(0.0, start + conv.arrival - time.perf_counter()))  # the arrival schedule
        messages = [{"role": "system", "content": conv.system}]
        for user, tokens in zip(conv.turns, conv.output_tokens, strict=True):
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": await _turn(client, url, messages, tokens, run)})

    limits = httpx.Limits(max_connections=len(conversations) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(converse(client, c, start) for c in conversations))
        return run, time.perf_counter() - start


def _vllm_counters(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total{"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total{"):
                queries += float(line.rsplit(" ", 1)[1])
    return hits, queries


def _decisions(gateway: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(gateway + "/metrics", timeout=10).text.splitlines():
        if line.startswith("switchyard_balancer_decisions_total{"):
            decision = line.split('decision="')[1].split('"')[0]
            out[decision] = out.get(decision, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _gateway(balancer: str, urls: list[str], workdir: Path) -> ManagedServer:
    port = free_port()
    config = {
        "server": {"port": port, "state_dir": str(workdir / f"state-{port}"), "log_level": "warning"},
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "router": {"enabled": False},
        # Routing is what is measured: no hedges, and on a slow, shared machine neither shedding
        # nor cutting streams that pause while the engine prefills other prompts.
        "relay": {"balancer": balancer, "hedge": False, "ttft_budget": {"interactive": 600, "batch": 600},
                  "stall_timeout": 300},
        "backends": [
            {"name": f"vllm-{i}", "type": "vllm", "base_url": u + "/v1", "models": [MODEL_NAME], "metrics_interval": 1}
            for i, u in enumerate(urls)
        ],
    }
    path = workdir / f"{balancer}.yaml"
    path.write_text(yaml.safe_dump(config))
    return ManagedServer([sys.executable, "-m", "gateway", "serve", "--config", str(path)], port, ready_path="/readyz")


def measure(balancer: str, urls: list[str], conversations: list[Conversation], workdir: Path) -> dict[str, Any]:
    with _gateway(balancer, urls, workdir) as gateway:
        hits0, queries0 = _vllm_counters(urls)
        run, seconds = asyncio.run(drive(gateway.url, conversations))
        hits1, queries1 = _vllm_counters(urls)
        decisions = _decisions(gateway.url)
    return {
        "balancer": balancer,
        "requests": len(run.ttft),
        "errors": run.errors,
        "seconds": round(seconds, 1),
        "ttft_p50_s": round(percentile(run.ttft, 0.5), 3),
        "ttft_p99_s": round(percentile(run.ttft, 0.99), 3),
        "output_tok_s": round(run.output_tokens / seconds, 2),
        "prefix_hit_rate": round((hits1 - hits0) / max(1.0, queries1 - queries0), 3),
        **({"decisions": decisions} if decisions else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", default=os.environ.get("TEST_VLLM_URLS", ""),
                        help="two vLLM roots, comma-separated (default: TEST_VLLM_URLS, else start two)")
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.25, help="conversations arriving per second (Poisson)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balancers", default=",".join(BALANCERS))
    args = parser.parse_args(argv)
    balancers = [b.strip() for b in args.balancers.split(",") if b.strip()]
    with contextlib.ExitStack() as stack:
        urls = [u.strip().rstrip("/").removesuffix("/v1") for u in args.urls.split(",") if u.strip()]
        if not urls:
            urls = [stack.enter_context(VllmServer()).url for _ in range(2)]
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        results = []
        # Words never sent before, in this run or an earlier one: vLLM keeps prefixes across runs.
        salt = random.SystemRandom().randrange(1 << 30)
        for i, balancer in enumerate(balancers):
            conversations = workload(args.conversations, args.turns, args.rate, args.seed, salt + i)
            result = measure(balancer, urls, conversations, workdir)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    by_name = {r["balancer"]: r for r in results}
    summary: dict[str, Any] = {
        "bench": "fleet",
        "replicas": len(urls),
        "conversations": args.conversations,
        "turns": args.turns,
        "rate_per_s": args.rate,
        "text_salt": salt,
        "results": results,
    }
    if "prefix" in by_name and "least_outstanding" in by_name:
        p, lo = by_name["prefix"], by_name["least_outstanding"]
        summary["ttft_p50_lo_over_prefix"] = round(lo["ttft_p50_s"] / max(p["ttft_p50_s"], 1e-9), 2)
        summary["ttft_p99_lo_over_prefix"] = round(lo["ttft_p99_s"] / max(p["ttft_p99_s"], 1e-9), 2)
        summary["throughput_prefix_over_lo"] = round(p["output_tok_s"] / max(lo["output_tok_s"], 1e-9), 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
