"""The soak's stack (Redis, two sims, an OTLP sink, optionally vLLM, the gateway with every stage) and the
open-loop client driving it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bench.loadgen.processes import ManagedServer, free_port, sim_command
from bench.measure import children, rss_mb
from bench.soak.memory import grown_most, held_over_time, take_snapshot, traced_environment
from bench.soak.report import Book, Outcome, summarize
from bench.soak.workload import ENGINE_MODEL, KEYS, Mix, Request, Stored

__all__ = ["STAGES", "gateway_config", "send", "soak"]


def build_tiny_model(directory: Path) -> str:
    """A tiny random Llama with a real BPE tokenizer (the batching tests' builders): cheap to run."""
    from tests.batching.conftest import build_tiny_llama, build_tokenizer

    build_tiny_llama(directory, build_tokenizer(directory))
    return str(directory)


STAGES = {"all": ("cache", "router"), "relay": (), "cache": ("cache",), "router": ("router",)}


def gateway_config(
    port: int,
    sim_url: str,
    flaky_url: str,
    redis_url: str | None,
    engine_model: str,
    state: Path,
    stages: str = "all",
    responses_ttl: float = 120.0,
    vllm: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """`stages` bisects a growth: `relay` turns the cache and the router off, `cache` and `router`
    keep only that one on (auth, limits and the relay always run). `vllm` is (base URL, model)."""
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
        # Stored responses expire within the run (Redis' TTL, or the memory store's), so the store
        # reaches its steady size during warm-up and retrieves past the TTL meet a 404. The memory
        # store's cap is a bound well above what the TTL keeps at the soak's rates.
        "responses": {"ttl": responses_ttl, "max_memory_entries": 2000},
    }
    if vllm is not None:
        base_url, model = vllm
        config["backends"].append({"name": "vllm", "type": "vllm", "base_url": base_url, "models": [model]})
    for stage in ("cache", "router"):
        if stage not in STAGES[stages]:
            config[stage]["enabled"] = False
    if redis_url:
        config["redis"] = {"url": redis_url}
    return config


# Stream events that end a request well, and those that report an error (Responses, Messages).
_DONE_EVENTS = {"response.completed", "response.incomplete", "message_stop"}
_ERROR_EVENTS = {"response.failed", "error"}


async def send(client: httpx.AsyncClient, url: str, req: Request, timeout: float) -> tuple[str, str | None]:
    """Send one request and read it to its end: the result, and a Responses answer's id."""
    # Messages clients (the anthropic SDK) send the key as x-api-key; the others as a bearer token.
    key = KEYS[req.tenant]
    headers = {"x-api-key": key} if req.path == "/v1/messages" else {"authorization": f"Bearer {key}"}
    if req.body is None:
        async with asyncio.timeout(timeout):
            resp = await client.get(url + req.path, headers=headers)
        if resp.status_code != 200:
            return _error_status(resp.status_code, resp.content), None
        payload = orjson.loads(resp.content)
        return ("ok" if payload.get("object") == "response" and "output" in payload else "malformed"), None
    body = {**req.body, "stream": True} if req.stream else req.body
    async with asyncio.timeout(timeout), client.stream("POST", url + req.path, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            return _error_status(resp.status_code, await resp.aread()), None
        if not req.stream:
            return _answer(orjson.loads(await resp.aread()))
        chunks = 0
        event: str | None = None  # the current `event:` name (Responses and Messages streams name theirs)
        ended: tuple[str, str | None] | None = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line == "data: [DONE]":
                ended = ended or ("ok", None)
            elif line.startswith("data: {"):
                if event in _ERROR_EVENTS or (event is None and '"error"' in line[:20]):
                    return "error_event", None
                if event in _DONE_EVENTS and ended is None:
                    data = orjson.loads(line[6:])
                    ended = ("ok", (data.get("response") or {}).get("id"))
                chunks += 1
                if req.abandon and chunks >= 2:
                    return "abandoned", None  # leaving the block closes the connection: the gateway must cancel
        return ended or ("truncated", None)  # read to the end: a stream must also close after its last event


def _rss_by_name(pids: list[int]) -> dict[str, float]:
    """RSS summed per process name (the engine's workers and the span exporter name themselves)."""
    total: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            total[name] = total.get(name, 0.0) + rss_mb(pid)
    return total


def _error_status(status: int, raw: bytes) -> str:
    error = orjson.loads(raw).get("error") or {}  # OpenAI's and Anthropic's shapes both have "error"
    return f"error_status:{status}:{str(error.get('message', ''))[:60]}"


def _answer(payload: dict[str, Any]) -> tuple[str, str | None]:
    """A whole JSON answer: chat, completions, embeddings, a response or a message."""
    if payload.get("object") == "response":
        done = "output" in payload and payload.get("status") in ("completed", "incomplete")
        return ("ok", str(payload["id"])) if done else ("malformed", None)
    if payload.get("type") == "message":
        return ("ok" if isinstance(payload.get("content"), list) else "malformed"), None
    return ("ok" if ("choices" in payload or "data" in payload) else "malformed"), None


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchyard-soak-")))
        vllm_url = args.vllm_url
        if args.vllm:  # first: it takes longest to start
            from bench.vllm_cpu import VllmServer

            vllm_url = stack.enter_context(VllmServer(model=args.vllm_model)).url
        vllm = (vllm_url.rstrip("/").removesuffix("/v1") + "/v1", args.vllm_model) if vllm_url else None
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
        config = gateway_config(
            port, sim.url, flaky.url, redis_url, engine_model, tmp / "state", args.stages, args.responses_ttl, vllm
        )
        config_path.write_text(yaml.safe_dump(config))
        sink_url = None
        env: dict[str, str] = {}
        if not args.no_traces:  # spans over OTLP/HTTP to a sink in its own process, head-sampled
            sink_port = free_port()
            sink_command = [sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)]
            sink_url = stack.enter_context(ManagedServer(sink_command, sink_port)).url
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(args.trace_ratio),
            }
        snapshots = tmp / "snapshots"
        snapshots.mkdir()
        watched = args.trace_memory or args.memory_stats
        with traced_environment(snapshots, args.trace_memory) if watched else contextlib.nullcontext():
            gateway = stack.enter_context(
                ManagedServer(
                    [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
                    port,
                    ready_path="/readyz",
                    timeout_s=300,
                    env=env,
                )
            )
        assert gateway.proc is not None
        return await _drive(args, gateway.url, gateway.proc.pid, snapshots if watched else None, sink_url)
    raise AssertionError("unreachable")  # pragma: no cover - the ExitStack does not swallow exceptions


async def _drive(
    args: argparse.Namespace, url: str, pid: int, snapshots: Path | None, sink_url: str | None
) -> dict[str, Any]:
    book = Book()
    mix = Mix(args.seed, args.vllm_model if (args.vllm_url or args.vllm) else None)
    arrivals = random.Random(args.seed + 1)
    duration = args.minutes * 60
    started = time.perf_counter()
    started_wall = time.time()
    in_flight = asyncio.Semaphore(args.max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)

    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:

        async def one(req: Request) -> None:
            t0 = time.perf_counter()
            response_id = None
            try:
                result, response_id = await send(client, url, req, args.timeout)
            except TimeoutError:
                result = "timeout"
            except httpx.HTTPError as exc:
                result = f"transport:{type(exc).__name__}"
            finally:
                in_flight.release()
            t1 = time.perf_counter()
            # A stored response asked for at least a TTL ago may be gone: its 404 is the store working.
            stale = req.refers_to is not None and t1 - req.refers_to >= args.responses_ttl
            if stale and result.startswith("error_status:404:"):
                result = "expired"
            if response_id is not None and req.turn:
                mix.remember(req.tenant, Stored(response_id, req.turn, t0))
            book.outcomes.append(Outcome(t0 - started, req.kind, t1 - t0, result))

        async def sample() -> None:
            while True:
                now = time.perf_counter() - started
                book.memory.append((now, rss_mb(pid)))
                with contextlib.suppress(OSError):
                    for name, mb in _rss_by_name(children(pid)).items():
                        book.children.setdefault(name, []).append((now, mb))
                await asyncio.sleep(args.sample_seconds)  # the sampling period

        sampler = asyncio.ensure_future(sample())
        first_snapshot: Path | None = None
        while time.perf_counter() - started < duration:
            warm = time.perf_counter() - started > 0.1 * duration
            if args.trace_memory and snapshots is not None and first_snapshot is None and warm:
                first_snapshot = await take_snapshot(pid, snapshots, 0)  # the end of warm-up
            await asyncio.sleep(arrivals.expovariate(args.rps))  # open-loop arrivals at --rps
            await in_flight.acquire()
            task = asyncio.ensure_future(one(mix.next()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        sampler.cancel()
        metrics = (await client.get(url + "/metrics")).text
        # Read after the gateway's counters: the sink has received at least what they count as exported.
        received = (await client.get(sink_url + "/stats")).json() if sink_url else None
        grew = None
        if snapshots is not None and first_snapshot is not None:
            grew = grown_most(first_snapshot, await take_snapshot(pid, snapshots, 1))
    summary = summarize(args, book, metrics, time.perf_counter() - started, received)
    if grew is not None:
        summary["allocations_grown_most"] = grew
    if snapshots is not None:
        summary["held_over_time"] = held_over_time(snapshots, pid, started_wall + 0.1 * duration)
    return summary
