"""The local engine under faults: a worker process killed (`kill -9`) in the middle of generating,
and more requests than its bounded queue holds. A tiny random Llama keeps it fast; the crash and
restart of the pool alone are covered in tests/batching/test_pool_failures.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.faults.conftest import FaultTable
from tests.faults.oracle import Seen, assert_answered, eventually, observe, recovery_time
from tests.support.processes import ServerProcess
from tests.support.stack import TINY_MODEL, metric_value, start_gateway, tiny_engine

pytestmark = pytest.mark.slow  # a model to build and load, a worker to restart: about a minute

MODEL = TINY_MODEL
MAX_NUM_SEQS, MAX_QUEUE = 2, 2  # a worker holds at most four requests
LONG: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me everything."}],
    "max_tokens": 400,
    "ignore_eos": True,  # runs to max_tokens: long enough to be killed in the middle
    "temperature": 0,
}
SHORT: dict[str, Any] = {**LONG, "max_tokens": 4}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("engine-faults")
    engine = tiny_engine(tmp, max_positions=512, max_num_seqs=MAX_NUM_SEQS, max_queue=MAX_QUEUE, restart_backoff_s=0.2)
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "relay": {"hedge": False},
        "resilience": {"backoff_base": 0.05, "backoff_max": 0.2},
        "backends": [{"name": "local", "type": "local", "models": [MODEL], "engine": engine}],
    }
    gw = start_gateway(config, tmp, env={"HF_HUB_OFFLINE": "1"}, timeout=180)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as c:
        yield c


def _worker(gw: ServerProcess) -> dict[str, Any]:
    workers = httpx.get(gw.url + "/readyz").json()["engine:local"]["workers"]
    assert len(workers) == 1
    return workers[0]  # type: ignore[no-any-return]


async def _first_chunk_then_rest(client: httpx.AsyncClient, url: str, started: asyncio.Event) -> Seen:
    """A stream that signals once its first content arrived, then reads to the end."""
    seen = Seen("truncated")
    t0 = time.perf_counter()
    async with client.stream("POST", url, json={**LONG, "stream": True}) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: {") and '"content"' in line and '"error"' not in line:
                seen.chunks += 1
                started.set()
            elif line.startswith("data: {") and '"error"' in line:
                seen.kind, seen.error = "error_event", orjson.loads(line[6:])["error"]
            elif line == "data: [DONE]":
                seen.kind = "complete"
    seen.status, seen.elapsed = 200, time.perf_counter() - t0
    return seen


async def test_beyond_the_engine_queue_requests_get_503_with_retry_after(
    gateway: ServerProcess, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    url = gateway.url + "/v1/chat/completions"
    results = await asyncio.gather(*(observe(client, url, LONG, deadline=60) for _ in range(10)))
    for seen in results:
        assert_answered(seen, deadline=60)
    served = [s for s in results if s.kind == "complete"]
    refused = [s for s in results if s.kind == "error_status"]
    assert {s.status for s in refused} == {503}
    assert len(served) >= MAX_NUM_SEQS + MAX_QUEUE  # the bounded queue was used in full
    assert len(refused) >= 1  # and beyond it nobody queued
    assert max(s.elapsed for s in refused) < 3.0  # refused quickly, after the relay's short retries
    text = (await client.get(gateway.url + "/metrics")).text
    assert metric_value(text, "switchyard_engine_requests_rejected_total", reason="overloaded") >= len(refused)
    fault_table.add(
        f"local engine: 10 long requests for a queue of {MAX_NUM_SEQS}+{MAX_QUEUE}",
        f"{len(served)} × 200, {len(refused)} × {refused[0].summary()} in ≤ {max(s.elapsed for s in refused):.2f} s",
        None,
    )


async def test_worker_killed_mid_generation(
    gateway: ServerProcess, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    url = gateway.url + "/v1/chat/completions"
    before = _worker(gateway)
    assert before["state"] == "ready"
    # Two streams run (max_num_seqs), one more stream and a plain request wait in the worker's queue.
    started = [asyncio.Event() for _ in range(MAX_NUM_SEQS)]
    streams = [asyncio.ensure_future(_first_chunk_then_rest(client, url, e)) for e in started]
    async with asyncio.timeout(30):
        await asyncio.gather(*(e.wait() for e in started))
    queued_stream = asyncio.ensure_future(observe(client, url, {**LONG, "stream": True}, deadline=60))
    plain = asyncio.ensure_future(observe(client, url, LONG, deadline=60))
    await eventually(lambda: _worker(gateway)["in_flight"] >= MAX_NUM_SEQS + 2, timeout=30, what="all four in")
    os.kill(before["pid"], signal.SIGKILL)
    killed = time.perf_counter()
    async with asyncio.timeout(30):  # nobody is left hanging
        seen_streams = await asyncio.gather(*streams)
        seen_queued = await queued_stream
        seen_plain = await plain
    for seen in seen_streams:
        assert seen.kind == "error_event" and seen.chunks >= 1, seen
        assert seen.error is not None and "stopped while serving" in seen.error["message"]
    # Nothing had reached the queued ones: they are retried, and refused clearly while the worker is down.
    for seen in (seen_queued, seen_plain):
        assert_answered(seen)
        assert seen.kind == "error_status" and seen.status in (502, 503), seen
    # While the worker restarts: a clear refusal, never a hang.
    during = await observe(client, url, SHORT, deadline=30)
    assert_answered(during)
    recovered = await recovery_time(client, url, SHORT, budget=90, since=killed)
    after = _worker(gateway)
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
    fault_table.add(
        "local engine worker kill -9 mid-generation (2 streams running; 1 stream, 1 plain queued)",
        f"running streams: {seen_streams[0].summary()}; queued stream: {seen_queued.summary()}; "
        f"plain: {seen_plain.summary()}; "
        f"meanwhile: {during.summary()}",
        recovered,
    )
