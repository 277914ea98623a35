"""Redis faults under steady traffic: stopped and restarted mid-run, and slow (latency added by a
loopback proxy). The cache, the rate limits and the tool router must keep serving while Redis is
gone or slow, every request must still be answered in bounded time, and each must come back on
its own once Redis does. (Two gateways sharing cache entries across an outage, one request at a
time, are covered in tests/integration/test_cache_http.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.auth import hash_key
from tests.faults.conftest import FaultTable
from tests.faults.delay_proxy import DelayProxy
from tests.faults.oracle import assert_answered
from tests.faults.traffic import Traffic, tools
from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import sim_backend, start_gateway, start_sim

pytestmark = pytest.mark.redis

STEADY, LIMITED = "sk-steady-tenant", "sk-limited-tenant"
QUESTIONS = [f"What is fact number {i} about owls?" for i in range(4)]


def _config(redis_url: str, sim: ServerProcess, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {
            "keys": [
                {"sha256": hash_key(STEADY), "tenant": "steady", "rpm": 100_000, "tpm": 100_000_000},
                {"sha256": hash_key(LIMITED), "tenant": "limited", "rpm": 3},
            ]
        },
        "redis": {"url": redis_url},
        "backends": [sim_backend("s", sim)],
        "relay": {"hedge": False},
        **extra,
    }


def _bodies(with_tools: bool) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for i, q in enumerate(QUESTIONS):
        ask = {"model": "sim-model", "temperature": 0, "messages": [{"role": "user", "content": q}]}
        bodies.append({**ask, "stream": i % 2 == 1})  # cacheable: misses, then hits
    if with_tools:
        bodies.append(
            {
                "model": "sim-model",
                "messages": [{"role": "user", "content": "Find me flights to Oslo"}],
                "tools": tools(20),  # over the router's threshold of 16
            }
        )
    return bodies


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim("--output-tokens", "6", log_dir=tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def _answers_consistent(traffic: Traffic) -> None:
    """Every answer to the same cacheable question is the same text (no reply crossed wires)."""
    texts: dict[int, set[str]] = {}
    for s in traffic.sent:
        if s.seen.kind == "complete" and s.index < len(QUESTIONS):
            texts.setdefault(s.index, set()).add(s.seen.text)
    assert all(len(t) == 1 for t in texts.values()), texts
    assert len({next(iter(t)) for t in texts.values()}) == len(texts)  # and different questions differ


async def _ask(client: httpx.AsyncClient, gw: ServerProcess, key: str, question: str) -> httpx.Response:
    body = {"model": "sim-model", "temperature": 0, "messages": [{"role": "user", "content": question}]}
    return await client.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


async def _cache_back(client: httpx.AsyncClient, gw: ServerProcess, since: float, budget: float = 15.0) -> float:
    """Seconds from `since` until a new question is stored and then served from the cache."""
    question = f"A question first asked at {time.time()}"
    while time.perf_counter() - since < budget:
        if (await _ask(client, gw, STEADY, question)).headers["x-switchyard-cache"] == "exact":
            return time.perf_counter() - since
        await asyncio.sleep(0.05)  # polling until the cache stops bypassing, bounded
    raise AssertionError("the cache did not come back")


async def _limits_back(client: httpx.AsyncClient, gw: ServerProcess, since: float, budget: float = 15.0) -> float:
    """Seconds from `since` until the limited tenant is refused again (its limit is 3 a minute)."""
    while time.perf_counter() - since < budget:
        resp = await _ask(client, gw, LIMITED, "hello")
        if resp.status_code == 429:
            assert int(resp.headers["retry-after"]) >= 1
            return time.perf_counter() - since
        assert resp.status_code == 200
    raise AssertionError("the rate limit did not come back")


def _router_writes(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as r:
        return int(r.get("switchyard:router:ver:steady") or 0)


@pytest.mark.slow  # the router needs the embedding model loaded
async def test_redis_stopped_and_restarted_mid_run(
    tmp_path: Path,
    sim: ServerProcess,
    redis_server: RedisServer,
    client: httpx.AsyncClient,
    fault_table: FaultTable,
) -> None:
    config = _config(
        redis_server.url,
        sim,
        cache={"semantic": False},
        router={"threshold": 16, "train_interval_s": 0.1, "embed_timeout_s": 5.0, "shadow_fraction": 0.0},
    )
    gw = start_gateway(config, tmp_path, lean=False, timeout=180)
    url = gw.url + "/v1/chat/completions"
    try:
        async with Traffic(client, url, _bodies(True), headers={"authorization": f"Bearer {STEADY}"}) as traffic:
            await traffic.until(20)
            assert _router_writes(redis_server.url) > 0  # the router is learning into Redis
            redis_server.stop()
            stopped = time.perf_counter()
            await traffic.until(30)
            # Limits fail open while Redis is away: the limited tenant is not refused.
            assert [(await _ask(client, gw, LIMITED, "hi")).status_code for _ in range(5)] == [200] * 5
            redis_server.start()  # an empty Redis on the same port
            restarted = time.perf_counter()
            cache_s = await _cache_back(client, gw, restarted)
            limits_s = await _limits_back(client, gw, restarted)
            await traffic.until(10)
        router_s = None
        deadline = time.perf_counter() + 15
        while router_s is None and time.perf_counter() < deadline:
            await _ask(client, gw, STEADY, "warm")  # keep the gateway busy while its router syncs
            if _router_writes(redis_server.url) > 0:
                router_s = time.perf_counter() - restarted
        assert router_s is not None, "the router never wrote its feedback to the new Redis"
        for sent in traffic.sent:
            assert_answered(sent.seen, deadline=5.0)
            assert sent.seen.kind == "complete", sent.seen
        during = traffic.between(stopped, restarted)
        assert during and all(s.seen.kind == "complete" for s in during)
        tool_replies = [s for s in during if s.index == len(QUESTIONS)]
        assert tool_replies, "no request with tools was sent while Redis was down"
        _answers_consistent(traffic)
        worst = max(s.seen.elapsed for s in during)
        fault_table.add(
            "Redis stopped, then restarted empty (cache, limits, router)",
            f"{len(during)} requests during the outage: all 200 complete (cache bypass, limits open), "
            f"slowest {worst:.2f} s",
            max(cache_s, limits_s, router_s),
        )
        fault_table.add("  ↳ cache serving hits again", "miss, then exact", cache_s)
        fault_table.add("  ↳ rate limit enforced again", "429 with Retry-After", limits_s)
        fault_table.add("  ↳ router feedback persisted again", "examples in Redis", router_s)
    finally:
        gw.stop()


async def test_redis_slow(
    tmp_path: Path,
    sim: ServerProcess,
    redis_server: RedisServer,
    client: httpx.AsyncClient,
    fault_table: FaultTable,
) -> None:
    with DelayProxy(redis_server.port) as proxy:
        gw = start_gateway(_config(proxy.url, sim), tmp_path)
        url = gw.url + "/v1/chat/completions"
        try:
            headers = {"authorization": f"Bearer {STEADY}"}
            async with Traffic(client, url, _bodies(False), headers=headers) as traffic:
                await traffic.until(10)
                phases = {}
                for delay in (0.05, 1.0):  # under, then well over, the 0.25 s Redis timeout
                    proxy.delay = delay
                    start = time.perf_counter()
                    await traffic.until(15)
                    phases[delay] = traffic.between(start, time.perf_counter())
                proxy.delay = 0.0
                healed = time.perf_counter()
                cache_s = await _cache_back(client, gw, healed)
                limits_s = await _limits_back(client, gw, healed)
                await traffic.until(10)
            for sent in traffic.sent:
                assert_answered(sent.seen)
                assert sent.seen.kind == "complete", sent.seen
            _answers_consistent(traffic)
            # With Redis slower than its timeout, every Redis call on the request path gives up
            # after 0.25 s: a request pays a bounded price, it never waits for Redis.
            slow_worst = max(s.seen.elapsed for s in phases[1.0])
            assert slow_worst < 3.0, slow_worst
            for delay, in_phase in phases.items():
                elapsed = sorted(s.seen.elapsed for s in in_phase)
                fault_table.add(
                    f"Redis slow: +{delay * 1000:.0f} ms each way",
                    f"{len(in_phase)} requests all 200 complete, median {elapsed[len(elapsed) // 2]:.2f} s, "
                    f"slowest {elapsed[-1]:.2f} s",
                    None,
                )
            fault_table.add("Redis fast again", "cache hits and limits back", max(cache_s, limits_s))
        finally:
            gw.stop()
