"""Soak the whole gateway: steady mixed load for --minutes, resident memory and latency over time.

One gateway process runs every stage (auth, limits on Redis, the Redis-backed exact and semantic
cache, the tool router, the relay) in front of a `switchyard sim` and the local engine. Requests
arrive at a steady --rps (Poisson, seeded) and mix:

    cacheable chat (a small pool of questions: hits and misses), plain and streamed
    uncacheable chat (temperature 1, fresh text), plain and streamed
    chat with 24 tools (over the router's threshold of 16; the sim calls one, the router learns)
    the local engine (a tiny random Llama built on the spot, or --engine-model), plain and streamed
    legacy completions and embeddings
    streams the client abandons after two chunks, and requests that ask the sim for a fault
    (errors these are meant to be, counted apart from unexpected ones; they go to a sim of their own)

The response cache and the router's feedback are capped low (300 entries, 100 examples per scope)
so that they are full by the end of warm-up. Every --sample-seconds the gateway's resident set size
is read (psutil if installed, else /proc), and its engine workers' too. The first tenth of the run
is warm-up (caches, pools, allocator arenas and the router's catalogues fill). Memory growth is the
least-squares slope of the samples after warm-up, per hour, as a share of the post-warm-up start;
latency drift compares the p99 of the first tenth of the post-warm-up run with the last tenth.

    .venv/bin/python -m bench.soak                       # 30 minutes
    .venv/bin/python -m bench.soak --minutes 10 --rps 20
    .venv/bin/python -m bench.soak --minutes 0.5         # a smoke run

The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bench.loadgen.processes import ManagedServer, free_port, sim_command

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["main", "soak"]

KEYS = {"soak-a": "sk-soak-tenant-a", "soak-b": "sk-soak-tenant-b"}
ENGINE_MODEL = "soak-llama"
_PAGE = os.sysconf("SC_PAGE_SIZE")
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


# -- memory --------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MiB (psutil when installed, else /proc)."""
    try:
        import psutil  # type: ignore[import-untyped]

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except ImportError:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20


def children(pid: int) -> list[int]:
    """Direct and indirect children (the engine's worker processes)."""
    found: list[int] = []
    frontier = [pid]
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def growth(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, float]:
    """Least-squares slope of RSS after warm-up, and start/end medians of the post-warm-up run."""
    after = [(t, m) for t, m in samples if t >= warmup_s]
    if len(after) < 3:
        after = list(samples)
    times = [t for t, _ in after]
    values = [m for _, m in after]
    tenth = max(1, len(values) // 10)
    start, end = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
    mean_t, mean_m = statistics.fmean(times), statistics.fmean(values)
    var = sum((t - mean_t) ** 2 for t in times)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in zip(times, values, strict=True)) / var if var else 0.0
    return {
        "start_mb": round(start, 1),
        "end_mb": round(end, 1),
        "max_mb": round(max(m for _, m in samples), 1),
        "slope_mb_per_hour": round(slope * 3600, 2),
        "growth_pct_per_hour": round(100 * slope * 3600 / start, 2) if start else 0.0,
    }


# -- where memory goes (--trace-memory) ----------------------------------------------------------

# Loaded by the gateway process at start-up (PYTHONPATH): SIGUSR2 writes a tracemalloc snapshot.
_SNAPSHOT_HOOK = """
import itertools, os, signal, tracemalloc
_taken = itertools.count()
def _snapshot(signum, frame):
    path = os.path.join(os.environ["SOAK_SNAPSHOT_DIR"], f"snapshot-{next(_taken)}.pickle")
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR2, _snapshot)
"""


@contextlib.contextmanager
def traced_environment(directory: Path) -> Iterator[None]:
    """Environment for the gateway process: tracemalloc on, and the snapshot hook importable."""
    (directory / "sitecustomize.py").write_text(_SNAPSHOT_HOOK)
    patch = {
        "PYTHONTRACEMALLOC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")])),
        "SOAK_SNAPSHOT_DIR": str(directory),
    }
    saved = {k: os.environ.get(k) for k in patch}
    os.environ.update(patch)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def take_snapshot(pid: int, directory: Path, index: int) -> Path:
    path = directory / f"snapshot-{index}.pickle"
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while True:
        if path.exists():
            return path
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway wrote no {path.name}")
        await asyncio.sleep(0.2)  # polling: the gateway writes it between two requests


def grown_most(before: Path, after: Path, top: int = 15) -> list[str]:
    """Source lines whose live allocations grew most between two snapshots."""
    import tracemalloc

    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib.*"),
    ]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    out = []
    for stat in new.compare_to(old, "lineno")[:top]:
        frame = stat.traceback[0]
        name = os.path.relpath(frame.filename.split("site-packages/")[-1])
        out.append(f"{name}:{frame.lineno} {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks)")
    return out


# -- the stack -----------------------------------------------------------------------------------


def build_tiny_model(directory: Path) -> str:
    """A tiny random Llama with a real BPE tokenizer (the batching tests' builders): cheap to run."""
    from tests.batching.conftest import build_tiny_llama, build_tokenizer

    build_tiny_llama(directory, build_tokenizer(directory))
    return str(directory)


def gateway_config(
    port: int, sim_url: str, flaky_url: str, redis_url: str | None, engine_model: str, state: Path
) -> dict[str, Any]:
    from gateway.auth import hash_key

    config: dict[str, Any] = {
        "server": {"port": port, "log_level": "warning", "state_dir": str(state)},
        "auth": {
            "keys": [{"sha256": hash_key(k), "tenant": t, "rpm": 100_000, "tpm": 50_000_000} for t, k in KEYS.items()]
        },
        "backends": [
            {"name": "sim", "type": "openai", "base_url": sim_url + "/v1", "models": ["sim-model", "embed-model"]},
            # Requests that ask for faults go to a backend of their own: its circuit may open, the others' not.
            {"name": "flaky", "type": "openai", "base_url": flaky_url + "/v1", "models": ["flaky-model"]},
            {
                "name": "local",
                "type": "local",
                "models": [ENGINE_MODEL],
                "engine": {
                    "model": engine_model,
                    "devices": ["cpu"],
                    "max_num_seqs": 8,
                    "max_queue": 32,
                    "max_model_len": 512,
                    "kv_cache_memory_mb": 64,
                    "warmup": False,
                },
            },
        ],
        # Caps small enough to be reached during warm-up: past them memory must stay flat, so growth
        # measured after warm-up is a leak, not a cache filling up (the defaults, 100,000 entries and
        # 2,000 examples per scope, would take this load hours to reach).
        "cache": {"embed_timeout_s": 0.5, "max_entries": 300},
        "router": {"train_interval_s": 1.0, "embed_timeout_s": 2.0, "max_examples": 100},
        "relay": {"hedge": False},
    }
    if redis_url:
        config["redis"] = {"url": redis_url}
    return config


# -- the workload --------------------------------------------------------------------------------


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
    body: dict[str, Any]
    stream: bool
    tenant: str
    abandon: bool = False
    fault: bool = False  # asks the sim for a failure: an error is the expected answer


class Mix:
    """Draws the next request; seeded, so two runs send the same sequence."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.questions = [
            f"What is the {w} policy for {t}?" for w in ("refund", "privacy", "travel", "expense") for t in TOPICS[:10]
        ]
        self.catalogues = [catalogue(s) for s in range(3)]

    def _text(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(n)) + f" #{self.rng.randrange(10**9)}"

    def next(self) -> Request:
        r, u = self.rng, self.rng.random()
        tenant = r.choice(list(KEYS))
        stream = r.random() < 0.5
        chat = "/v1/chat/completions"
        if u < 0.30:  # the question pool is small and skewed: hits, misses and coalesced herds
            q = self.questions[min(int(r.paretovariate(1.2)) - 1, len(self.questions) - 1)]
            body = {"model": "sim-model", "temperature": 0, "messages": [{"role": "user", "content": q}]}
            return Request("cacheable", chat, body, stream, tenant)
        if u < 0.52:
            body = {"model": "sim-model", "temperature": 1, "messages": [{"role": "user", "content": self._text(12)}]}
            return Request("chat", chat, body, stream, tenant)
        if u < 0.67:
            tools = r.choice(self.catalogues)
            topic = r.choice(TOPICS)
            body = {
                "model": "sim-model",
                "tools": tools,
                "messages": [{"role": "user", "content": f"Please {r.choice(ACTIONS)} my {topic} for next week"}],
            }
            return Request("tools", chat, body, stream, tenant)
        if u < 0.79:
            body = {
                "model": ENGINE_MODEL,
                "max_tokens": 16,
                "temperature": 0,
                "messages": [{"role": "user", "content": self._text(8)}],
            }
            return Request("engine", chat, body, stream, tenant)
        if u < 0.86:
            body = {"model": "sim-model", "prompt": self._text(10), "max_tokens": 12}
            return Request("completions", "/v1/completions", body, stream, tenant)
        if u < 0.93:
            body = {"model": "embed-model", "input": [self._text(6) for _ in range(r.randint(1, 4))]}
            return Request("embeddings", "/v1/embeddings", body, False, tenant)
        if u < 0.97:
            body = {
                "model": "sim-model",
                "temperature": 1,
                "messages": [{"role": "user", "content": self._text(10)}],
                "sim": {"output_tokens": 40, "itl_ms": 20},
            }
            return Request("abandoned", chat, body, True, tenant, abandon=True)
        fault = r.choice(
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
        return Request("fault", chat, body, stream, tenant, fault=True)


# -- the client ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    at: float  # seconds since the start of the run
    kind: str
    latency: float
    result: str  # ok, abandoned, error_status:<code>, error_event, truncated, transport, timeout


@dataclass
class Book:
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[tuple[float, float]] = field(default_factory=list)
    workers: list[tuple[float, float]] = field(default_factory=list)


async def send(client: httpx.AsyncClient, url: str, req: Request, timeout: float) -> str:
    body = {**req.body, "stream": True} if req.stream else req.body
    headers = {"authorization": f"Bearer {KEYS[req.tenant]}"}
    async with asyncio.timeout(timeout), client.stream("POST", url + req.path, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            error = orjson.loads(await resp.aread()).get("error") or {}
            return f"error_status:{resp.status_code}:{str(error.get('message', ''))[:60]}"
        if not req.stream:
            payload = orjson.loads(await resp.aread())
            return "ok" if ("choices" in payload or "data" in payload) else "malformed"
        chunks = 0
        async for line in resp.aiter_lines():
            if line == "data: [DONE]":
                return "ok"
            if line.startswith("data: {"):
                if '"error"' in line[:20]:
                    return "error_event"
                chunks += 1
                if req.abandon and chunks >= 2:
                    return "abandoned"  # leaving the block closes the connection: the gateway must cancel
        return "truncated"


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchyard-soak-")))
        redis_url = None
        if not args.no_redis:
            from tests.support.processes import RedisServer

            redis = RedisServer().start()
            stack.callback(redis.stop)
            redis_url = redis.url
        engine_model = args.engine_model or build_tiny_model(tmp / "model")
        sim_port = free_port()
        sim = stack.enter_context(
            ManagedServer(
                sim_command(
                    sim_port,
                    "--models",
                    "sim-model,embed-model",
                    "--output-tokens",
                    "uniform:8:48",
                    "--ttft-ms",
                    "lognormal:40:0.5",
                    "--itl-ms",
                    "uniform:2:8",
                    "--seed",
                    str(args.seed),
                ),
                sim_port,
            )
        )
        flaky_port = free_port()
        flaky_command = sim_command(flaky_port, "--models", "flaky-model", "--output-tokens", "8")
        flaky = stack.enter_context(ManagedServer(flaky_command, flaky_port))
        port = free_port()
        config_path = tmp / "gateway.yaml"
        config = gateway_config(port, sim.url, flaky.url, redis_url, engine_model, tmp / "state")
        config_path.write_text(yaml.safe_dump(config))
        snapshots = tmp / "snapshots"
        snapshots.mkdir()
        with traced_environment(snapshots) if args.trace_memory else contextlib.nullcontext():
            gateway = stack.enter_context(
                ManagedServer(
                    [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                    port,
                    ready_path="/readyz",
                    timeout_s=300,
                )
            )
        assert gateway.proc is not None
        return await _drive(args, gateway.url, gateway.proc.pid, snapshots if args.trace_memory else None)
    raise AssertionError("unreachable")  # pragma: no cover - the ExitStack does not swallow exceptions


async def _drive(args: argparse.Namespace, url: str, pid: int, snapshots: Path | None) -> dict[str, Any]:
    book = Book()
    mix = Mix(args.seed)
    arrivals = random.Random(args.seed + 1)
    duration = args.minutes * 60
    started = time.perf_counter()
    in_flight = asyncio.Semaphore(args.max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)

    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:

        async def one(req: Request) -> None:
            t0 = time.perf_counter()
            try:
                result = await send(client, url, req, args.timeout)
            except TimeoutError:
                result = "timeout"
            except httpx.HTTPError as exc:
                result = f"transport:{type(exc).__name__}"
            finally:
                in_flight.release()
            book.outcomes.append(Outcome(t0 - started, req.kind, time.perf_counter() - t0, result))

        async def sample() -> None:
            while True:
                now = time.perf_counter() - started
                book.memory.append((now, rss_mb(pid)))
                with contextlib.suppress(OSError):
                    book.workers.append((now, sum(rss_mb(c) for c in children(pid))))
                await asyncio.sleep(args.sample_seconds)  # the sampling period

        sampler = asyncio.ensure_future(sample())
        first_snapshot: Path | None = None
        while time.perf_counter() - started < duration:
            if snapshots is not None and first_snapshot is None and time.perf_counter() - started > 0.1 * duration:
                first_snapshot = await take_snapshot(pid, snapshots, 0)  # the end of warm-up
            await asyncio.sleep(arrivals.expovariate(args.rps))  # open-loop arrivals at --rps
            await in_flight.acquire()
            task = asyncio.ensure_future(one(mix.next()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        sampler.cancel()
        metrics = (await client.get(url + "/metrics")).text
        grew = None
        if snapshots is not None and first_snapshot is not None:
            grew = grown_most(first_snapshot, await take_snapshot(pid, snapshots, 1))
    summary = summarize(args, book, metrics, time.perf_counter() - started)
    if grew is not None:
        summary["allocations_grown_most"] = grew
    return summary


# -- the report ----------------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total


def _trace(samples: list[tuple[float, float]], elapsed: float) -> list[float]:
    """The gateway's RSS at twenty points of the run (the median of each twentieth)."""
    out = []
    for i in range(20):
        part = [m for t, m in samples if i * elapsed / 20 <= t < (i + 1) * elapsed / 20]
        if part:
            out.append(round(statistics.median(part), 1))
    return out


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(args: argparse.Namespace, book: Book, metrics: str, elapsed: float) -> dict[str, Any]:
    warmup = 0.1 * elapsed
    outcomes = book.outcomes
    counts = Counter(o.result.split(":")[0] for o in outcomes)
    short = [(o.kind, ":".join(o.result.split(":")[:2])) for o in outcomes]
    unexpected = [o for o in outcomes if o.kind != "fault" and o.result not in ("ok", "abandoned")]
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, result in short:
        by_kind[kind][result] += 1
    # Latency of the requests that ran to their end (faults and abandoned streams excluded), by window.
    timed = [o for o in outcomes if o.result == "ok" and o.at >= warmup]
    window = max(5.0, (elapsed - warmup) / 10)  # a tenth of the measured run
    first = [o.latency for o in timed if o.at < warmup + window]
    last = [o.latency for o in timed if o.at >= elapsed - window]
    engine_first = [o.latency for o in timed if o.kind == "engine" and o.at < warmup + window]
    engine_last = [o.latency for o in timed if o.kind == "engine" and o.at >= elapsed - window]
    p99_first, p99_last = _p(first, 0.99), _p(last, 0.99)
    return {
        "bench": "soak",
        "minutes": round(elapsed / 60, 2),
        "rps_target": args.rps,
        "requests": len(outcomes),
        "rps": round(len(outcomes) / elapsed, 2),
        "results": dict(counts),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "unexpected_errors": len(unexpected),
        "error_rate": round(len(unexpected) / max(1, len(outcomes)), 5),
        "unexpected_examples": dict(Counter(f"{o.kind}:{o.result}" for o in unexpected).most_common(5)),
        "memory_gateway": growth(book.memory, warmup),
        "memory_trace_mb": _trace(book.memory, elapsed),
        "memory_engine_workers": growth(book.workers, warmup) if book.workers else None,
        "latency": {
            "window_s": round(window, 1),
            "p50_first_s": round(_p(first, 0.5), 4),
            "p50_last_s": round(_p(last, 0.5), 4),
            "p99_first_s": round(p99_first, 4),
            "p99_last_s": round(p99_last, 4),
            "p99_drift": round(p99_last / p99_first, 3) if p99_first else None,
            "engine_p99_first_s": round(_p(engine_first, 0.99), 4),
            "engine_p99_last_s": round(_p(engine_last, 0.99), 4),
        },
        "gateway": {
            "cache_hits": _metric(metrics, "switchyard_cache_hits_total"),
            "cache_entries": _metric(metrics, "switchyard_cache_entries"),
            "router_examples": _metric(metrics, "switchyard_router_feedback_examples_total"),
            "coalesced": _metric(metrics, "switchyard_coalesced_requests_total"),
            "router_narrowed": _metric(metrics, "switchyard_router_requests_total", outcome="narrowed"),
            "router_trainings": _metric(metrics, "switchyard_router_trainings_total"),
            "client_cancellations": _metric(metrics, "switchyard_client_cancellations_total"),
            "stream_errors": _metric(metrics, "switchyard_stream_errors_total"),
            "engine_restarts": _metric(metrics, "switchyard_engine_worker_restarts_total"),
        },
        "seed": args.seed,
    }


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
    p.add_argument(
        "--trace-memory", action="store_true", help="tracemalloc in the gateway: which lines grew after warm-up"
    )
    args = p.parse_args(argv)
    summary = asyncio.run(soak(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
