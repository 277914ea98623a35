"""HTTP clients compared at the gateway's job: CPU per upstream call, sequential calls to a sim, in
the same run (rounds interleaved). Why the gateway keeps its own client (gateway/upstreams/http1.py).

    python -m bench.clients                 # 300 calls per client and round, 5 rounds
    python -m bench.clients --calls 100

Each client is used as the gateway would use it, tuned: one shared, pooled, keep-alive session,
identity encoding, no per-call cookies or redirects. Two calls: a plain answer (16 tokens) and a
stream of 64 chunks read piece by piece. httpx and aiohttp are measured when installed. The last
line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.loadgen.processes import ManagedServer, free_port, sim_command
from bench.measure import run_loop
from gateway.upstreams.http1 import Pool, encode_headers, render_request

__all__ = ["main"]

PATH = "/v1/chat/completions"
HEADERS = {"content-type": "application/json", "accept-encoding": "identity", "x-request-id": "bench"}


def _body(stream: bool, tokens: int) -> bytes:
    sim = {"itl_ms": 0, "output_tokens": tokens}
    messages = [{"role": "user", "content": "hi"}]
    return orjson.dumps({"model": "sim-model", "messages": messages, "stream": stream, "sim": sim})


Call = Callable[[bytes], Awaitable[int]]


async def _ours(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    pool = Pool.for_url(url)
    head = encode_headers({"host": pool.authority, **HEADERS})

    async def call(body: bytes) -> int:
        exchange = await pool.request(render_request("POST", PATH, head, body), read_timeout=60.0)
        return sum([1 async for _ in exchange])

    return call, pool.aclose


async def _httpx(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=4.0)
    client = httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits, timeout=60.0, trust_env=False)

    async def call(body: bytes) -> int:
        response = await client.send(client.build_request("POST", PATH, content=body), stream=True)
        n = sum([1 async for _ in response.aiter_raw()])
        await response.aclose()
        return n

    return call, client.aclose


async def _aiohttp(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp
    import yarl

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=4.0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=60.0),
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers=HEADERS,
    )
    target = yarl.URL(url + PATH)

    async def call(body: bytes) -> int:
        response = await session.post(target, data=body)
        n = sum([1 async for _ in response.content.iter_any()])
        response.release()
        return n

    return call, session.close


CLIENTS = {"http1 (ours)": (_ours, None), "httpx": (_httpx, "httpx"), "aiohttp": (_aiohttp, "aiohttp")}


async def measure(url: str, calls: int, rounds: int) -> dict[str, Any]:
    made = {}
    for name, (make, module) in CLIENTS.items():
        if module is None or importlib.util.find_spec(module) is not None:
            made[name] = await make(url)
    bodies = {"plain": _body(False, 16), "stream64": _body(True, 64)}
    cpu: dict[str, dict[str, list[float]]] = {n: {k: [] for k in bodies} for n in made}
    wall: dict[str, dict[str, list[float]]] = {n: {k: [] for k in bodies} for n in made}
    for call, _ in made.values():  # connections and first-use costs, not measured
        for body in bodies.values():
            for _ in range(20):
                await call(body)
    for r in range(rounds):
        for name in made if r % 2 == 0 else list(reversed(list(made))):
            call = made[name][0]
            for kind, body in bodies.items():
                c0, times = time.process_time(), []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await call(body)
                    times.append(time.perf_counter() - t0)
                cpu[name][kind].append((time.process_time() - c0) / calls * 1e6)
                wall[name][kind].append(statistics.median(times) * 1e6)
    for _, close in made.values():
        await close()
    return {
        name: {f"{kind}_cpu_us": statistics.median(cpu[name][kind]) for kind in bodies}
        | {f"{kind}_wall_p50_us": statistics.median(wall[name][kind]) for kind in bodies}
        for name in made
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300, help="calls per client, kind and round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    port = free_port()
    with ManagedServer(sim_command(port, "--log-level", "warning", "--ttft-ms", "0", "--itl-ms", "0"), port) as sim:
        result = run_loop(measure(sim.url, args.calls, args.rounds))
    for name, r in result.items():
        print(
            f"{name:13s} CPU per call: plain {r['plain_cpu_us']:6.0f} us, 64 chunks {r['stream64_cpu_us']:6.0f} us"
            f" | wall p50 {r['plain_wall_p50_us']:6.0f} / {r['stream64_wall_p50_us']:6.0f} us"
        )
    print(json.dumps({"bench": "clients", "calls": args.calls, "rounds": args.rounds, "clients": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
