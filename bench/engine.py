"""Local engine benchmark on the bundled SmolLM2: against vLLM over HTTP, and against Hugging Face.

`--workload chats` or `--workload prefix` (see `bench/chat_load.py`) serves the same streamed chats
over HTTP from each system, one after the other with the machine to itself, prefix caching on in each:

    switchyard        this gateway in front of its engine (`switchyard serve`), float32
    switchyard-bf16   the same in bfloat16
    vllm, vllm-bf16   vLLM's CPU build (`bench/vllm_cpu.py`), float32 and bfloat16

The engine's default dtype on this CPU (`batching.devices.default_cpu_dtype`) is marked in the summary,
and each system is compared with vLLM at the same dtype (throughput ratio, TTFT p99 ratio).

    .venv/bin/python -m bench.engine --workload chats --repeat 3
    .venv/bin/python -m bench.engine --workload prefix --systems switchyard,vllm

`--workload poisson` (the default) is the in-process comparison with Hugging Face, one Poisson
workload served four ways:

    (a) sequential   Hugging Face `generate`, one request at a time, first come first served
    (b) static       Hugging Face `generate` on batches of whatever has arrived (up to --batch), each
                     batch running until its longest request is done
    (c) hf-cb        transformers' continuous batching (`init_continuous_batching`, attention "sdpa",
                     which transformers 5 runs over its paged cache; "paged|sdpa" is its old name)
    (d) engine       this package's `WorkerPool` (one CPU worker process), float32 like the others
    (+) engine-bf16  the same in bfloat16 (`--systems ...,engine-bf16`): not bit-exact with the float32
                     reference, much faster where the CPU has AVX512-BF16 or AMX; reported beside the
                     goal, never in it

Prompts are random token ids with lengths drawn log-uniformly from a wide range, outputs likewise
(16 to 256 tokens); end-of-sequence is ignored so every system generates exactly the drawn lengths.
Arrival times are the same for all four. Reported per system: output tokens per second (all output
tokens over the time from the first arrival to the last completion), TTFT and inter-token latency
p50/p99. The last line is one JSON summary with ratios against the baselines.

    .venv/bin/python -m bench.engine --quick --repeat 3     # about 8 minutes
    .venv/bin/python -m bench.engine                        # about 12 minutes on 2 cores
    .venv/bin/python -m bench.engine --device cuda:0 --requests 128 --rate 16   # a GPU host
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.measure import percentile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the engine's worker sets it: same OpenMP for all

MODEL = "bundled:smollm2-135m-instruct"
SERVED_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Job:
    index: int
    arrival: float  # seconds after the start of the run
    prompt: list[int]
    output_tokens: int


@dataclass
class Trace:
    """When each generated token of one request reached the client (perf_counter seconds)."""

    arrival: float
    token_times: list[float] = field(default_factory=list)


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def workload(
    n: int, rate: float, prompt_range: tuple[int, int], output_range: tuple[int, int], seed: int, vocab: int = 49152
) -> list[Job]:
    rng = random.Random(seed)
    jobs, t = [], 0.0
    for i in range(n):
        prompt = [rng.randrange(100, vocab) for _ in range(log_uniform(rng, *prompt_range))]
        jobs.append(Job(i, t, prompt, log_uniform(rng, *output_range)))
        t += rng.expovariate(rate)
    return jobs


def summarise(name: str, jobs: list[Job], traces: list[Trace], start: float) -> dict[str, Any]:
    for job, trace in zip(jobs, traces, strict=True):
        if len(trace.token_times) != job.output_tokens:
            raise RuntimeError(f"{name}: request {job.index} got {len(trace.token_times)} of {job.output_tokens}")
    tokens = sum(len(t.token_times) for t in traces)
    end = max(t.token_times[-1] for t in traces)
    ttft = [t.token_times[0] - t.arrival for t in traces]
    itl = [b - a for t in traces for a, b in zip(t.token_times, t.token_times[1:], strict=False)]
    return {
        "system": name,
        "output_tokens": tokens,
        "seconds": round(end - start, 2),
        "output_tok_s": round(tokens / (end - start), 2),
        "ttft_p50_s": round(percentile(ttft, 0.5), 3),
        "ttft_p99_s": round(percentile(ttft, 0.99), 3),
        "itl_p50_s": round(percentile(itl, 0.5), 4),
        "itl_p99_s": round(percentile(itl, 0.99), 4),
    }


# -- Hugging Face baselines ----------------------------------------------------------------------


def load_hf_model(device: str, attn: str = "sdpa") -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from batching.models import resolve_model

    source = resolve_model(MODEL)
    model: Any = AutoModelForCausalLM.from_pretrained(
        source.directory, gguf_file=source.gguf_file, dtype=torch.float32, attn_implementation=attn
    )
    model.to(device).eval()
    model.generation_config.eos_token_id = None  # generate exactly the drawn lengths
    return model


class StepClock:
    """A `generate` streamer that records when each decoding step delivered its tokens."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def wait_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        time.sleep(delay)  # the simulated client has not sent the request yet


def run_sequential(model: Any, jobs: list[Job]) -> tuple[list[Trace], float]:
    import torch

    start = time.perf_counter()
    traces = [Trace(start + j.arrival) for j in jobs]
    with torch.inference_mode():
        for job, trace in zip(jobs, traces, strict=True):
            wait_until(trace.arrival)
            clock = StepClock()
            ids = torch.tensor([job.prompt], device=model.device)
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=job.output_tokens,
                min_new_tokens=job.output_tokens,
                do_sample=False,
                streamer=clock,
                pad_token_id=0,
            )
            trace.token_times = clock.times[: job.output_tokens]
    return traces, start


def run_static(model: Any, jobs: list[Job], batch_size: int) -> tuple[list[Trace], float]:
    import torch

    start = time.perf_counter()
    traces = [Trace(start + j.arrival) for j in jobs]
    pending = list(range(len(jobs)))
    with torch.inference_mode():
        while pending:
            wait_until(traces[pending[0]].arrival)
            now = time.perf_counter()
            batch = [i for i in pending if traces[i].arrival <= now][:batch_size]
            pending = [i for i in pending if i not in batch]
            width = max(len(jobs[i].prompt) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):  # left padding, as decoder-only generation needs
                n = len(jobs[i].prompt)
                ids[row, width - n :] = torch.tensor(jobs[i].prompt)
                mask[row, width - n :] = 1
            ids, mask = ids.to(model.device), mask.to(model.device)
            longest = max(jobs[i].output_tokens for i in batch)
            clock = StepClock()
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                streamer=clock,
                pad_token_id=0,
            )
            for i in batch:
                traces[i].token_times = clock.times[: jobs[i].output_tokens]
    return traces, start


def run_hf_continuous(
    model: Any, jobs: list[Job], max_seqs: int, max_batch_tokens: int, kv_mb: int
) -> tuple[list[Trace], float]:
    from transformers import ContinuousBatchingConfig, GenerationConfig

    page = 256
    per_token = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads * model.config.head_dim * 4
    config = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=max(8, (kv_mb << 20) // (per_token * page)),
        max_batch_tokens=max_batch_tokens,
        max_requests_per_batch=max_seqs,
        allow_block_sharing=False,
    )
    generation = GenerationConfig(  # type: ignore[no-untyped-call]
        do_sample=False, max_new_tokens=max(j.output_tokens for j in jobs), eos_token_id=None, pad_token_id=0
    )
    manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
    manager.warmup()
    manager.start()
    try:
        start = time.perf_counter()
        traces = [Trace(start + j.arrival) for j in jobs]
        results: dict[str, Any] = {}
        done = threading.Event()

        def collect() -> None:
            while len(results) < len(jobs):
                out = manager.get_result(timeout=1.0)
                if out is not None and out.is_finished():
                    results[out.request_id] = out
            done.set()

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        for job, trace in zip(jobs, traces, strict=True):
            wait_until(trace.arrival)
            manager.add_request(
                job.prompt,
                request_id=f"r{job.index}",
                max_new_tokens=job.output_tokens,
                record_timestamps=True,
                eos_token_id=-1,
            )
        done.wait()
        for job, trace in zip(jobs, traces, strict=True):
            out = results[f"r{job.index}"]
            if out.error:
                raise RuntimeError(f"hf-cb request {job.index}: {out.error}")
            trace.token_times = list(out.timestamps or [])[: job.output_tokens]
        return traces, start
    finally:
        manager.stop(block=True)


# -- this engine ---------------------------------------------------------------------------------


async def start_pool(device: str, max_seqs: int, max_batch_tokens: int, kv_mb: int, queue: int, threads: int,
                     dtype: str = "float32") -> Any:
    from batching import EngineSettings, WorkerPool

    pool = WorkerPool(EngineSettings(model=MODEL, devices=[device], max_num_seqs=max_seqs, dtype=dtype,
                                     max_num_batched_tokens=max_batch_tokens, kv_cache_memory_mb=kv_mb,
                                     max_queue=queue, torch_threads=threads))
    await pool.start()
    return pool


async def run_engine(pool: Any, jobs: list[Job]) -> tuple[list[Trace], float]:
    from batching import GenerationRequest, SamplingParams

    start = time.perf_counter()
    traces = [Trace(start + j.arrival) for j in jobs]

    async def client(job: Job, trace: Trace) -> None:
        await asyncio.sleep(max(0.0, trace.arrival - time.perf_counter()))  # the client's arrival time
        params = SamplingParams(temperature=0.0, max_tokens=job.output_tokens, ignore_eos=True)
        async for out in pool.generate(GenerationRequest(job.prompt, params)):
            now = time.perf_counter()
            trace.token_times.extend([now] * len(out.token_ids))

    await asyncio.gather(*(client(j, t) for j, t in zip(jobs, traces, strict=True)))
    return traces, start


# -- main ----------------------------------------------------------------------------------------


def median_row(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"system": name, "runs": len(rows)}
    for key in rows[0]:
        if key != "system":
            merged[key] = statistics.median(r[key] for r in rows)
    merged["output_tok_s_runs"] = [r["output_tok_s"] for r in rows]
    return merged


# -- over HTTP: this gateway and vLLM ------------------------------------------------------------


def gateway_config(port: int, dtype: str, max_seqs: int, max_batch_tokens: int, kv_mb: int, threads: int | None,
                   state_dir: str) -> dict[str, Any]:
    engine: dict[str, Any] = {"model": MODEL, "devices": ["cpu"], "dtype": dtype, "max_num_seqs": max_seqs,
                              "max_num_batched_tokens": max_batch_tokens, "kv_cache_memory_mb": kv_mb,
                              "max_queue": 256, "enable_prefix_caching": True}
    if threads:
        engine["torch_threads"] = threads
    return {
        "server": {"port": port, "state_dir": state_dir},
        "auth": {"mode": "none"},
        "cache": {"enabled": False},  # a response cache would answer repeated turns without the engine
        "router": {"enabled": False},
        # Measure the engine, not the gateway's shedding, hedging or retries.
        "relay": {"ttft_budget": {"interactive": 3600.0, "batch": 3600.0}, "hedge": False, "stall_timeout": 600.0},
        "resilience": {"retries": 0},
        "backends": [{"name": "local", "type": "local", "models": [SERVED_NAME], "engine": engine}],
    }


@contextlib.contextmanager
def serve_switchyard(dtype: str, args: argparse.Namespace) -> Iterator[str]:
    import yaml

    from bench.loadgen.processes import ManagedServer, free_port

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = os.path.join(tmp, "gateway.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(gateway_config(port, dtype, args.max_seqs, args.max_batch_tokens, args.kv_mb,
                                          args.threads, os.path.join(tmp, "state")), f)
        command = [sys.executable, "-m", "gateway", "serve", "--config", path]
        with ManagedServer(command, port, ready_path="/readyz", timeout_s=900) as server:
            yield server.url


@contextlib.contextmanager
def serve_vllm(dtype: str, args: argparse.Namespace) -> Iterator[str]:
    from bench.vllm_cpu import VllmServer

    # The same limits as the engine's: sequences and tokens per iteration (prefix caching is on in both).
    limits = ["--max-num-seqs", str(args.max_seqs), "--max-num-batched-tokens", str(args.max_batch_tokens)]
    with VllmServer(dtype=dtype, extra_args=limits) as server:  # type: ignore[arg-type]
        yield server.url


def run_http(args: argparse.Namespace) -> dict[str, Any]:
    from batching.devices import cpu_flags, default_cpu_dtype
    from bench.chat_load import chats_workload, prefix_workload, run_workload, summarise

    if args.workload == "chats":
        chats = chats_workload(args.requests or 32, args.seed)
    else:
        chats = prefix_workload(args.conversations, args.turns, args.seed)
    expected = sum(sum(c.output_tokens) for c in chats)
    with open("/proc/cpuinfo") as f:
        default_dtype, why = default_cpu_dtype(cpu_flags(f.read()))
    systems = args.systems.split(",") if args.systems != "engine,hf-cb,static,sequential" else [
        "switchyard", "switchyard-bf16", "vllm", "vllm-bf16"]
    launchers = {
        "switchyard": lambda: serve_switchyard("float32", args),
        "switchyard-bf16": lambda: serve_switchyard("bfloat16", args),
        "vllm": lambda: serve_vllm("float32", args),
        "vllm-bf16": lambda: serve_vllm("bfloat16", args),
    }
    print(f"workload {args.workload}: {len(chats)} conversations, {sum(len(c.turns) for c in chats)} requests, "
          f"{expected} output tokens; default dtype here: {default_dtype} ({why})", file=sys.stderr)
    rows: dict[str, dict[str, Any]] = {}
    for name in systems:  # one server at a time: each has the machine to itself
        with launchers[name]() as url:
            asyncio.run(run_workload(url, SERVED_NAME, chats[:2]))  # warm-up, not measured
            runs = []
            for _ in range(args.repeat):
                outcome, seconds = asyncio.run(run_workload(url, SERVED_NAME, chats))
                runs.append(summarise(name, outcome, seconds, expected))
                print(json.dumps(runs[-1]), file=sys.stderr)
        rows[name] = median_row(name, runs)
        rows[name]["texts_digest"] = runs[-1]["texts_digest"]
    summary: dict[str, Any] = {
        "bench": "engine", "workload": args.workload, "requests": sum(len(c.turns) for c in chats),
        "output_tokens": expected, "seed": args.seed, "repetitions": args.repeat,
        "default_dtype": default_dtype, "default_dtype_reason": why, "systems": rows,
    }
    for mine, theirs in (("switchyard", "vllm"), ("switchyard-bf16", "vllm-bf16")):
        if mine in rows and theirs in rows:
            a, b = rows[mine], rows[theirs]
            tag = "bf16" if "bf16" in mine else "fp32"
            summary[f"{tag}_throughput_vs_vllm"] = round(a["output_tok_s"] / b["output_tok_s"], 3)
            summary[f"{tag}_ttft_p99_vs_vllm"] = round(a["ttft_p99_s"] / b["ttft_p99_s"], 3)
            summary[f"{tag}_same_text_as_vllm"] = a["texts_digest"] == b["texts_digest"]
    default = "switchyard" if default_dtype == "float32" else "switchyard-bf16"
    summary["default_system"] = default
    if default in rows:
        rows[default]["default_dtype"] = True
    return summary


async def amain(args: argparse.Namespace) -> None:
    import torch

    from batching.allocator import keep_freed_memory

    if args.quick:
        n, rate, prompts, outputs = args.requests or 12, args.rate or 2.0, (16, 256), (16, 96)
    else:
        n, rate, prompts, outputs = args.requests or 32, args.rate or 2.0, (16, 512), (16, 256)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    jobs = workload(n, rate, prompts, outputs, args.seed)
    systems = args.systems.split(",")
    print(f"workload: {n} requests, Poisson {rate}/s, prompts {sum(len(j.prompt) for j in jobs)} tokens "
          f"({prompts[0]}-{prompts[1]}), outputs {sum(j.output_tokens for j in jobs)} tokens "
          f"({outputs[0]}-{outputs[1]}), {threads} torch threads, {args.repeat} repetition(s)", file=sys.stderr)

    pools: dict[str, Any] = {}
    for name, dtype in (("engine", "float32"), ("engine-bf16", "bfloat16")):
        if name in systems:
            pools[name] = await start_pool(args.device, args.max_seqs, args.max_batch_tokens, args.kv_mb, n, threads,
                                           dtype)
    model = await asyncio.to_thread(load_hf_model, args.device) if set(systems) - set(pools) else None
    keep_freed_memory()  # the engine's worker does this once loaded; the baselines get the same allocator
    runners: dict[str, Callable[[], Awaitable[tuple[list[Trace], float]]]] = {
        "engine": lambda: run_engine(pools["engine"], jobs),
        "engine-bf16": lambda: run_engine(pools["engine-bf16"], jobs),
        "sequential": lambda: asyncio.to_thread(run_sequential, model, jobs),
        "static": lambda: asyncio.to_thread(run_static, model, jobs, args.max_seqs),
        "hf-cb": lambda: asyncio.to_thread(run_hf_continuous, model, jobs, args.max_seqs, args.max_batch_tokens,
                                           args.kv_mb),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    try:
        for rep in range(args.repeat):
            # Rotate the order, so that no system always runs while the machine is busiest.
            for name in systems[rep % len(systems):] + systems[: rep % len(systems)]:
                traces, start = await runners[name]()
                results[name].append(summarise(name, jobs, traces, start))
                print(json.dumps(results[name][-1]), file=sys.stderr)
    finally:
        for pool in pools.values():
            await pool.aclose()
    rows = {name: median_row(name, runs) for name, runs in results.items()}

    summary: dict[str, Any] = {
        "bench": "engine",
        "mode": "quick" if args.quick else "full",
        "requests": n,
        "rate_per_s": rate,
        "prompt_tokens": sum(len(j.prompt) for j in jobs),
        "output_tokens": sum(j.output_tokens for j in jobs),
        "seed": args.seed,
        "torch_threads": threads,
        "device": args.device,
        "repetitions": args.repeat,
        "systems": rows,
    }
    for engine, tag in (("engine", ""), ("engine-bf16", "bf16_")):
        if engine not in rows:
            continue
        mine = rows[engine]
        for base in ("sequential", "static", "hf-cb"):
            if base in rows:
                summary[f"{tag}throughput_vs_{base}"] = round(mine["output_tok_s"] / rows[base]["output_tok_s"], 2)
                summary[f"{tag}ttft_p99_vs_{base}"] = round(mine["ttft_p99_s"] / rows[base]["ttft_p99_s"], 3)
    if "engine" in rows:
        mine = rows["engine"]
        if "static" in rows and "hf-cb" in rows:
            summary["goal_met"] = (
                summary["throughput_vs_static"] >= 3.0 and summary["throughput_vs_hf-cb"] >= 1.5
                and mine["ttft_p99_s"] < min(rows["static"]["ttft_p99_s"], rows["hf-cb"]["ttft_p99_s"])
            )
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["poisson", "chats", "prefix"], default="poisson")
    parser.add_argument("--conversations", type=int, default=8, help="prefix workload: conversations")
    parser.add_argument("--turns", type=int, default=4, help="prefix workload: turns per conversation")
    parser.add_argument("--quick", action="store_true", help="a small workload (CI-sized)")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--rate", type=float, help="mean arrivals per second (Poisson)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (order rotated); medians reported")
    parser.add_argument("--max-seqs", type=int, default=32, help="engine max_num_seqs, static batch size, CB cap")
    parser.add_argument("--max-batch-tokens", type=int, default=256)
    parser.add_argument("--kv-mb", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every system")
    parser.add_argument("--systems", default="engine,hf-cb,static,sequential")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N, for every system alike")
    args = parser.parse_args()
    if args.workload == "poisson":
        asyncio.run(amain(args))
    else:
        print(json.dumps(run_http(args)))


if __name__ == "__main__":
    main()
