"""The fault matrix for remote backends: each fault of `switchyard sim` (pinned per request through
its `sim` object), plain and streamed, against a real gateway process.

For every case: what the client saw (status, error shape, how the stream ended), that it came before
the client's deadline, that it was a complete answer or a clear error (never a stream that just
stops), and how soon the next ordinary request succeeds, with no restart. Mid-stream drops and
stalls are also covered, with their metrics, in tests/integration/test_relay.py; retries, fallbacks
and the circuit in tests/integration/test_resilience.py.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultTable
from tests.faults.oracle import Seen, assert_answered, observe, recovery_time
from tests.support.processes import ServerProcess, free_port
from tests.support.stack import SimControl, sim_backend, start_gateway, start_sim

READ_TIMEOUT = 1.0
RETRIES = 1
# The longest a request may take when every attempt times out: attempts × read timeout + backoff.
HANG_BOUND = (RETRIES + 1) * READ_TIMEOUT + 0.5
DEADLINE = 10.0  # the client's own timeout: nothing may come close to it
ASK: dict[str, Any] = {"model": "sim-model", "messages": [{"role": "user", "content": "tell me a story"}]}


def _config(backends: list[dict[str, Any]], **resilience: Any) -> dict[str, Any]:
    return {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},  # every request reaches the backend
        "backends": backends,
        "relay": {"hedge": False, "stall_timeout": 3.0},
        "resilience": {
            "retries": RETRIES,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "circuit_failures": 5,
            "circuit_cooldown": 1.0,
            "wait_for_backend": 2.0,
            "health_interval": 0.5,
            **resilience,
        },
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, SimControl]]:
    tmp = tmp_path_factory.mktemp("backend-faults")
    sim = start_sim(
        "--models",
        "sim-model,patient-model",
        "--output-tokens",
        "6",
        "--itl-ms",
        "5",
        "--slow-itl-ms",
        "1000",
        log_dir=tmp,
    )
    backends = [
        sim_backend("s", sim, models=["sim-model"], read_timeout=READ_TIMEOUT),
        # The same server behind a read timeout longer than a slow answer takes.
        sim_backend("patient", sim, models=["patient-model"], read_timeout=10.0),
    ]
    gw = start_gateway(_config(backends), tmp)
    try:
        yield gw, SimControl(sim)
    finally:
        gw.stop()
        sim.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=DEADLINE, limits=httpx.Limits(max_connections=100)) as c:
        yield c


def _label(fault: dict[str, Any], stream: bool) -> str:
    extra = f", after {fault['after_chunks']} chunks" if "after_chunks" in fault else ""
    status = f" {fault['status']}" if "status" in fault else ""
    return f"backend {fault['fault']}{status}{extra} ({'stream' if stream else 'plain'})"


# fault pinned on the request → what the client must see, plain and streamed
CASES: list[tuple[dict[str, Any], bool, str, int | None]] = [
    ({"fault": "hang"}, False, "error_status", 504),
    ({"fault": "hang"}, True, "error_status", 504),
    ({"fault": "disconnect", "after_chunks": 3}, True, "error_event", None),
    ({"fault": "disconnect", "after_chunks": 0}, True, "error_status", 502),  # before the first token: retried
    ({"fault": "disconnect"}, False, "error_status", 502),
    ({"fault": "malformed_json", "after_chunks": 2}, True, "error_event", None),
    ({"fault": "malformed_json"}, False, "error_status", 502),
    ({"fault": "malformed_sse", "after_chunks": 2}, True, "error_event", None),
    ({"fault": "malformed_sse"}, False, "error_status", 502),
    ({"fault": "error", "status": 500}, True, "error_status", 502),
    ({"fault": "error", "status": 503}, False, "error_status", 502),
    ({"fault": "error", "status": 429}, False, "error_status", 429),
]


@pytest.mark.parametrize(("fault", "stream", "kind", "status"), CASES, ids=[_label(f, s) for f, s, *_ in CASES])
async def test_fault_is_answered_in_time_and_the_gateway_recovers(
    stack: tuple[ServerProcess, SimControl],
    client: httpx.AsyncClient,
    fault_table: FaultTable,
    fault: dict[str, Any],
    stream: bool,
    kind: str,
    status: int | None,
) -> None:
    gw, _ = stack
    url = gw.url + "/v1/chat/completions"
    seen = await observe(client, url, {**ASK, "stream": stream, "sim": fault}, deadline=DEADLINE)
    assert_answered(seen, deadline=HANG_BOUND + 1.0)
    assert seen.kind == kind, seen
    if status is not None:
        assert seen.status == status, seen
    if kind == "error_event":
        assert seen.chunks >= 1  # the failure came after content had reached the client
    assert seen.error is not None and "sim" not in str(seen.error.get("param"))
    recovered = await recovery_time(client, url, {**ASK, "stream": stream}, budget=5.0)
    fault_table.add(_label(fault, stream), seen.summary() + f" in {seen.elapsed:.2f} s", recovered)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_one_token_per_second_is_relayed_whole_and_unbunched(
    stack: tuple[ServerProcess, SimControl], client: httpx.AsyncClient, fault_table: FaultTable, stream: bool
) -> None:
    gw, _ = stack
    body = {**ASK, "model": "patient-model", "stream": stream, "sim": {"fault": "slow", "output_tokens": 4}}
    arrivals: list[float] = []
    started = time.perf_counter()
    async with client.stream("POST", gw.url + "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                arrivals.append(time.perf_counter() - started)
    if stream:
        seen = await observe(client, gw.url + "/v1/chat/completions", body, deadline=DEADLINE)
        assert seen.kind == "complete" and seen.chunks == 4, seen
        gaps = [b - a for a, b in itertools.pairwise(arrivals[1:5])]  # between the four content chunks
        assert all(0.8 < g < 1.3 for g in gaps), gaps  # one a second, each as it was made
    else:
        assert 2.8 < time.perf_counter() - started < 4.5
        seen = Seen("complete", 200, elapsed=time.perf_counter() - started)
    fault_table.add(f"backend slow, 1 token/s ({'stream' if stream else 'plain'})", seen.summary(), None)


async def test_a_slow_backend_stalls_nobody_else(
    stack: tuple[ServerProcess, SimControl], client: httpx.AsyncClient
) -> None:
    gw, _ = stack
    url = gw.url + "/v1/chat/completions"
    slow_body = {**ASK, "stream": True, "sim": {"fault": "slow"}}
    slow = [asyncio.ensure_future(observe(client, url, slow_body, deadline=DEADLINE)) for _ in range(4)]
    fast = await asyncio.gather(
        *(observe(client, url, {**ASK, "stream": i % 2 == 0}, deadline=DEADLINE) for i in range(40))
    )
    assert all(s.kind == "complete" for s in fast)
    assert not any(s.done() for s in slow)  # the slow streams were still running the whole time
    assert statistics.quantiles([s.elapsed for s in fast], n=20)[-1] < 1.0  # p95 of the others stays low
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)


async def test_refused_connections_fail_fast_then_recover_on_their_own(
    tmp_path: Path, client: httpx.AsyncClient, fault_table: FaultTable
) -> None:
    dead_port = free_port()
    live = start_sim("--models", "sim-model", "--output-tokens", "4", log_dir=tmp_path, name="live")
    dead = {
        "name": "dead",
        "type": "openai",
        "base_url": f"http://127.0.0.1:{dead_port}/v1",
        "models": ["sim-model", "solo-model"],
    }
    gw = start_gateway(_config([dead, sim_backend("live", live)]), tmp_path)
    revived: ServerProcess | None = None
    try:
        url = gw.url + "/v1/chat/completions"
        # A model with a live backend beside the dead one: failover, invisible to the client.
        for stream in (False, True):
            seen = await observe(client, url, {**ASK, "stream": stream}, deadline=DEADLINE)
            assert seen.kind == "complete", seen
        fault_table.add("backend refuses connections, another serves the model", seen.summary(), None)
        # A model only the dead backend serves: a quick, clear error, plain or streamed.
        solo = {**ASK, "model": "solo-model"}
        for stream in (False, True):
            seen = await observe(client, url, {**solo, "stream": stream}, deadline=DEADLINE)
            assert_answered(seen, deadline=3.0)
            assert seen.kind == "error_status" and seen.status in (502, 503), seen
        fault_table.add("backend refuses connections, the only one for its model", seen.summary(), None)
        revived = ServerProcess(
            [sys.executable, "-m", "sim", "--port", str(dead_port), "--models", "sim-model,solo-model"],
            dead_port,
        ).start()
        revived_at = time.perf_counter()  # the backend answers from here on
        recovered = await recovery_time(client, url, solo, budget=10.0, since=revived_at)
        fault_table.add("backend refused connections, then came back", "200 complete", recovered)
        assert recovered < 5.0  # health checks every 0.5 s and a 1 s circuit cooldown
    finally:
        gw.stop()
        live.stop()
        if revived is not None:
            revived.stop()
