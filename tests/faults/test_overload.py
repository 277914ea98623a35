"""Overload: queues are bounded, and beyond them requests are refused at once with 503/429 and
Retry-After, never left to wait without bound or to grow the gateway's memory. Identical
cacheable requests arriving together cost one backend call (single flight), at any herd size.

(Ten coalesced requests and the tenant boundary of single flight are covered in
tests/integration/test_cache_http.py; the local engine's queue in test_local_engine_faults.py;
batch shedding on predicted TTFT in tests/integration/test_relay.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultTable
from tests.faults.oracle import Seen, assert_answered, eventually, observe, rss_mb
from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim

MAX_CONCURRENCY, MAX_QUEUE, WAIT = 2, 4, 1.5
SLOW: dict[str, Any] = {
    "model": "sim-model",
    "messages": [{"role": "user", "content": "hello"}],
    "sim": {"ttft_ms": 1000, "output_tokens": 2},
}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim("--output-tokens", "4", log_dir=tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        yield c


def _rss_mb(proc: ServerProcess) -> float:
    assert proc.proc is not None
    return rss_mb(proc.proc.pid)


async def _max_upstream_in_flight(sim: SimControl, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, (await asyncio.to_thread(sim.stats))["in_flight"])
        await asyncio.sleep(0.02)  # sampling the sim's gauge while the burst runs
    return peak


async def _bad_request_latencies(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    async def one() -> float:
        started = time.perf_counter()
        assert (await client.post(url, content=b"{not json")).status_code == 400
        return time.perf_counter() - started

    return sorted(await asyncio.gather(*(one() for _ in range(n))))


async def test_relay_queue_is_bounded_and_the_rest_is_refused_with_retry_after(
    tmp_path: Path, sim: ServerProcess, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "backends": [sim_backend("s", sim, max_concurrency=MAX_CONCURRENCY)],
        "relay": {"hedge": False, "max_queue": MAX_QUEUE},
        "resilience": {"wait_for_backend": WAIT, "retries": 0},
    }
    gw = start_gateway(config, tmp_path)
    control = SimControl(sim)
    try:
        url = gw.url + "/v1/chat/completions"
        await observe(client, url, {**SLOW, "sim": {"output_tokens": 2}}, deadline=10)  # warm the pool
        rss_before = _rss_mb(gw)
        control.reset()
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(_max_upstream_in_flight(control, stop))
        burst = 300
        results: list[Seen] = await asyncio.gather(*(observe(client, url, SLOW, deadline=20) for _ in range(burst)))
        stop.set()
        peak = await sampler
        rss_after = _rss_mb(gw)
        for seen in results:
            assert_answered(seen, deadline=10.0)
        served = [s for s in results if s.kind == "complete"]
        refused = [s for s in results if s.kind == "error_status"]
        assert {s.status for s in refused} == {503}
        # Two run at once and four may wait, for at most the wait budget: inside the gateway nobody
        # took longer than one request ahead of it, the budget and its own second of service (3.5 s).
        assert len(served) >= MAX_CONCURRENCY
        text = (await client.get(gw.url + "/metrics")).text
        name = "switchyard_request_duration_seconds_bucket"
        within = metric_value(text, name, endpoint="chat/completions", le="5.0")
        assert within == metric_value(text, name, endpoint="chat/completions", le="+Inf") == burst + 1
        assert peak <= MAX_CONCURRENCY
        assert control.requests_to() == len(served)  # nothing refused reached the backend
        at_once = [s for s in refused if s.error and "waiting" in s.error["message"]]
        assert len(at_once) >= 0.8 * burst
        # The queue was full: refused at once, as fast as a request the gateway refuses on sight (300
        # connections at once cost this client and machine time of their own; the baseline has it too).
        baseline = await _bad_request_latencies(client, url, burst)
        quick = sorted(s.elapsed for s in at_once)
        assert quick[len(quick) // 2] < 2 * baseline[len(baseline) // 2] + 0.1
        assert quick[-1] < 2 * baseline[-1] + 0.5
        assert rss_after - rss_before < 50  # a burst beyond the queue does not grow the gateway
        assert metric_value(text, "switchyard_shed_total", reason="queue_full") == len(at_once)
        fault_table.add(
            f"overload: {burst} at once, backend max_concurrency {MAX_CONCURRENCY}, relay.max_queue {MAX_QUEUE}",
            f"{len(served)} × 200; {len(at_once)} × 503 Retry-After at once (median {quick[len(quick) // 2]:.2f} s, "
            f"a 400 takes {baseline[len(baseline) // 2]:.2f} s); "
            f"{len(refused) - len(at_once)} × 503 after the {WAIT:g} s wait; upstream peak {peak}; "
            f"RSS {rss_before:.0f}→{rss_after:.0f} MB",
            None,
        )
    finally:
        gw.stop()


async def test_a_thundering_herd_of_200_costs_one_backend_call(
    tmp_path: Path, sim: ServerProcess, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    gw = start_gateway({"auth": {"mode": "none"}, "backends": [sim_backend("s", sim)]}, tmp_path)
    control = SimControl(sim)
    try:
        url = gw.url + "/v1/chat/completions"
        body = {
            "model": "sim-model",
            "temperature": 0,
            "messages": [{"role": "user", "content": "What changed in the new release?"}],
            "sim": {"ttft_ms": 1500},  # long enough for the whole herd to arrive while the first runs
        }
        started = time.perf_counter()
        results = await asyncio.gather(
            *(observe(client, url, {**body, "stream": i % 2 == 1}, deadline=30) for i in range(200))
        )
        took = time.perf_counter() - started
        assert [s.kind for s in results] == ["complete"] * 200
        assert len({s.text for s in results}) == 1  # everyone got the one answer, plain or streamed
        assert control.requests_to() == 1
        coalesced = sum(s.headers.get("x-switchyard-cache-reason") == "coalesced" for s in results)
        assert coalesced == 199
        fault_table.add(
            "thundering herd: 200 identical cacheable requests (half streamed)",
            f"200 × 200 in {took:.1f} s, one upstream call, 199 coalesced",
            None,
        )
    finally:
        gw.stop()


async def test_a_herd_whose_leader_fails_shares_the_failure_instead_of_stampeding(
    tmp_path: Path, sim: ServerProcess, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    config = {
        "auth": {"mode": "none"},
        "backends": [sim_backend("s", sim, read_timeout=1.0)],
        "resilience": {"retries": 0},
    }
    gw = start_gateway(config, tmp_path)
    control = SimControl(sim)
    try:
        url = gw.url + "/v1/chat/completions"
        body = {
            "model": "sim-model",
            "temperature": 0,
            "messages": [{"role": "user", "content": "Is the service up after the deploy?"}],
            "sim": {"fault": "hang"},  # the first call times out after a second
        }
        results = await asyncio.gather(*(observe(client, url, body, deadline=30) for _ in range(100)))
        for seen in results:
            assert_answered(seen, deadline=10.0)
        assert {s.status for s in results} == {504}
        # One backend call failed; the 99 waiting on it were told so, not sent to the failing backend.
        assert control.requests_to() == 1
        fault_table.add(
            "thundering herd of 100 whose one backend call times out",
            f"100 × {results[-1].summary()}, one upstream call",
            None,
        )
        healthy = {**body, "sim": {"output_tokens": 3}}
        assert (await observe(client, url, healthy, deadline=10)).kind == "complete"  # no failure remembered
    finally:
        gw.stop()


async def test_a_herd_whose_leader_walks_away_elects_one_new_leader(
    tmp_path: Path, sim: ServerProcess, client: httpx.AsyncClient
) -> None:
    gw = start_gateway({"auth": {"mode": "none"}, "backends": [sim_backend("s", sim)]}, tmp_path)
    control = SimControl(sim)
    try:
        url = gw.url + "/v1/chat/completions"
        body = {
            "model": "sim-model",
            "temperature": 0,
            "messages": [{"role": "user", "content": "What is new today?"}],
            "sim": {"ttft_ms": 1500},
        }
        impatient = asyncio.ensure_future(observe(client, url, body, deadline=0.8))  # gives up before its answer
        await eventually(lambda: control.requests_to() > 0, timeout=5, what="the first request in flight")
        followers = await asyncio.gather(*(observe(client, url, body, deadline=30) for _ in range(30)))
        assert (await impatient).kind == "hung"
        assert [s.kind for s in followers] == ["complete"] * 30
        assert control.requests_to() == 2  # the walk-away's call, and one for all thirty
    finally:
        gw.stop()
