"""SIGTERM with streams in flight: the streams finish, newcomers are told to go elsewhere, and the
process exits once the last stream ends; a stream that outlives the drain deadline is ended with
a clear error, not cut off silently."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultTable
from tests.faults.oracle import Seen, assert_answered, observe
from tests.support.processes import ServerProcess
from tests.support.stack import metric_value, sim_backend, start_gateway, start_sim

BODY: dict[str, Any] = {
    "model": "sim-model",
    "stream": True,
    "messages": [{"role": "user", "content": "a long story"}],
    "sim": {"itl_ms": 100, "output_tokens": 20},  # two seconds a stream
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def _gateway(tmp_path: Path, sim: ServerProcess, drain_seconds: float) -> ServerProcess:
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "server": {"drain_seconds": drain_seconds},
        "backends": [sim_backend("s", sim)],
    }
    return start_gateway(config, tmp_path)


async def _streams_in_flight(client: httpx.AsyncClient, gw: ServerProcess, n: int) -> list[asyncio.Future[Seen]]:
    """`n` streams started; returns once the gateway holds all of them in flight."""
    url = gw.url + "/v1/chat/completions"
    streams: list[asyncio.Future[Seen]] = [
        asyncio.ensure_future(observe(client, url, BODY, deadline=30)) for _ in range(n)
    ]
    async with asyncio.timeout(10):
        while True:
            text = (await client.get(gw.url + "/metrics")).text
            if metric_value(text, "switchyard_requests_in_flight", endpoint="chat/completions") >= n:
                return streams
            await asyncio.sleep(0.02)  # polling the gateway's own gauge, bounded


async def _exit_code(proc: ServerProcess, timeout: float) -> tuple[int, float]:
    assert proc.proc is not None
    started = time.perf_counter()
    code = await asyncio.to_thread(proc.proc.wait, timeout)
    return code, time.perf_counter() - started


async def test_sigterm_lets_streams_finish_and_refuses_newcomers(
    tmp_path: Path, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    sim = start_sim("--output-tokens", "4", log_dir=tmp_path)
    gw = _gateway(tmp_path, sim, drain_seconds=20)
    try:
        streams = await _streams_in_flight(client, gw, 5)
        gw.signal(signal.SIGTERM)
        signalled = time.perf_counter()
        newcomer = await observe(client, gw.url + "/v1/chat/completions", BODY, deadline=5)
        ready = await client.get(gw.url + "/readyz")
        seen = await asyncio.gather(*streams)
        code, _ = await _exit_code(gw, 20)
        for s in seen:
            assert s.kind == "complete" and s.chunks == 20, s  # every stream ran to its end
        assert_answered(newcomer)
        assert newcomer.status == 503 and newcomer.error is not None and "shutting down" in newcomer.error["message"]
        assert ready.status_code == 503 and ready.json()["draining"] is True
        assert code == 0
        exited_after = time.perf_counter() - signalled
        assert exited_after < 2.0 + 3.0  # once the streams (2 s each) were done, not at the 20 s deadline
        fault_table.add(
            "SIGTERM, 5 streams in flight (drain 20 s)",
            f"streams: {seen[0].summary()}; newcomers: {newcomer.summary()}; exit 0 after {exited_after:.1f} s",
            None,
        )
    finally:
        gw.stop()
        sim.stop()


async def test_streams_that_outlive_the_drain_end_with_an_error_event(
    tmp_path: Path, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    sim = start_sim("--output-tokens", "4", log_dir=tmp_path)
    gw = _gateway(tmp_path, sim, drain_seconds=0.5)
    try:
        streams = await _streams_in_flight(client, gw, 3)
        gw.signal(signal.SIGTERM)
        seen = await asyncio.gather(*streams)
        code, _ = await _exit_code(gw, 10)
        for s in seen:
            assert_answered(s)
            assert s.kind == "error_event" and 1 <= s.chunks < 20, s
        assert code == 0
        fault_table.add("SIGTERM, streams longer than the drain (0.5 s)", seen[0].summary(), None)
    finally:
        gw.stop()
        sim.stop()
