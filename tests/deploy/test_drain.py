"""Graceful drain of a real gateway process: SIGTERM during a long stream.

The stream runs to completion, readiness turns 503, new API requests get 503 with Retry-After,
liveness stays 200 (so an orchestrator does not kill a draining pod), and the process exits as soon
as it is idle — or at `server.drain_seconds` when a stream outlives it, which then ends with an
error event. A second signal exits at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import sim_backend, start_gateway, start_sim

pytestmark = pytest.mark.slow


@dataclass
class Stream:
    """What a streaming client saw."""

    content_chunks: int = 0
    done: bool = False
    error_event: bool = False
    ended_at: float = 0.0
    first_chunk: threading.Event = field(default_factory=threading.Event)


def _carries_content(line: str) -> bool:
    compact = line.replace(" ", "")
    return line.startswith("data: {") and '"content":"' in compact and '"content":""' not in compact


def _stream(url: str, body: dict[str, Any], seen: Stream) -> Stream:
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line == "data: [DONE]":
                    seen.done = True
                elif line.startswith("data: ") and '"error"' in line:
                    seen.error_event = True
                elif _carries_content(line):
                    seen.content_chunks += 1
                    seen.first_chunk.set()
    except httpx.HTTPError:
        pass  # a connection cut at the drain deadline is what that test expects; it checks `done`
    finally:
        seen.ended_at = time.monotonic()
        seen.first_chunk.set()  # never leave the test waiting on a stream that failed early
    return seen


def _body(tokens: int, itl_ms: int) -> dict[str, Any]:
    return {
        "model": "sim-model",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "sim": {"itl_ms": itl_ms, "output_tokens": tokens, "ttft_ms": 10},
    }


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim(log_dir=tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _gateway(tmp_path: Path, sim: ServerProcess, drain_seconds: float, **server: Any) -> ServerProcess:
    return start_gateway(
        {
            "auth": {"mode": "none"},
            "backends": [sim_backend("sim", sim, models=["sim-model"])],
            "relay": {"hedge": False},
            "server": {"drain_seconds": drain_seconds, **server},
        },
        tmp_path,
    )


def _start_stream(pool: ThreadPoolExecutor, gw: ServerProcess, body: dict[str, Any]) -> tuple[Future[Stream], Stream]:
    seen = Stream()
    future = pool.submit(_stream, gw.url, body, seen)
    assert seen.first_chunk.wait(10), "the stream never started"
    assert seen.content_chunks >= 1
    return future, seen


def _wait_draining(gw: ServerProcess, timeout: float = 5.0) -> httpx.Response:
    """/readyz once it reports the drain (the signal is handled asynchronously by the server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = httpx.get(gw.url + "/readyz", timeout=2)
        if resp.status_code == 503:
            return resp
        time.sleep(0.02)  # polling the server's state; the signal handler runs in the child
    raise AssertionError("/readyz never turned 503 after SIGTERM")


def test_sigterm_lets_the_stream_finish_refuses_new_work_and_exits(
    tmp_path: Path, sim: ServerProcess, pool: ThreadPoolExecutor
) -> None:
    gw = _gateway(tmp_path, sim, drain_seconds=20)
    assert gw.proc is not None
    try:
        future, _ = _start_stream(pool, gw, _body(tokens=30, itl_ms=100))  # about 3 s of stream
        signalled = time.monotonic()
        gw.signal(signal.SIGTERM)

        ready = _wait_draining(gw)
        assert ready.json()["ready"] is False and ready.json()["draining"] is True
        assert httpx.get(gw.url + "/healthz", timeout=2).status_code == 200  # liveness holds while draining

        refused = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
        assert refused.status_code == 503
        assert float(refused.headers["retry-after"]) > 0
        assert refused.json()["error"]["type"] == "overloaded_error"
        assert gw.proc.poll() is None, "the process must wait for the stream"

        result = future.result(timeout=30)
        assert result.done and not result.error_event
        assert result.content_chunks == 30
        returncode = gw.proc.wait(timeout=15)
        exited = time.monotonic()
    finally:
        gw.stop()
    assert returncode == 0
    assert exited >= result.ended_at - 0.5  # it did not leave before the stream ended
    # Idle after the stream: it exits then, well before the 20 s deadline.
    assert exited - signalled < 12


def test_a_stream_longer_than_the_deadline_is_cut_and_the_process_exits_on_time(
    tmp_path: Path, sim: ServerProcess, pool: ThreadPoolExecutor
) -> None:
    drain_seconds = 1.5
    gw = _gateway(tmp_path, sim, drain_seconds=drain_seconds)
    assert gw.proc is not None
    try:
        future, _ = _start_stream(pool, gw, _body(tokens=200, itl_ms=100))  # about 20 s of stream
        signalled = time.monotonic()
        gw.signal(signal.SIGTERM)
        returncode = gw.proc.wait(timeout=15)
        exited = time.monotonic()
        result = future.result(timeout=15)
    finally:
        gw.stop()
    assert returncode == 0
    # Cut short, but told so: an OpenAI error event ends the stream rather than a dropped connection.
    assert not result.done and result.content_chunks < 200
    assert result.error_event
    # The deadline, the grace for the error events, uvicorn's shutdown, the interpreter's exit: bounded.
    assert drain_seconds - 0.2 <= exited - signalled < drain_seconds + 6


def test_a_second_signal_exits_at_once(tmp_path: Path, sim: ServerProcess, pool: ThreadPoolExecutor) -> None:
    gw = _gateway(tmp_path, sim, drain_seconds=60)
    assert gw.proc is not None
    try:
        future, _ = _start_stream(pool, gw, _body(tokens=300, itl_ms=100))
        gw.signal(signal.SIGTERM)
        _wait_draining(gw)
        second = time.monotonic()
        gw.signal(signal.SIGTERM)
        gw.proc.wait(timeout=15)
        exited = time.monotonic()
        result = future.result(timeout=15)
    finally:
        gw.stop()
    assert not result.done
    assert exited - second < 5


def test_workers_drain_together(tmp_path: Path, sim: ServerProcess, pool: ThreadPoolExecutor) -> None:
    """With `server.workers > 1` the parent forwards SIGTERM; every worker drains, then all exit."""
    gw = _gateway(tmp_path, sim, drain_seconds=20, workers=2)
    assert gw.proc is not None
    try:
        future, _ = _start_stream(pool, gw, _body(tokens=20, itl_ms=100))
        gw.signal(signal.SIGTERM)
        # Whichever worker answers, it is draining: no worker keeps taking new work.
        for _ in range(4):
            _wait_draining(gw)
            refused = httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
                timeout=5,
            )
            assert refused.status_code == 503 and "retry-after" in refused.headers
        result = future.result(timeout=30)
        returncode = gw.proc.wait(timeout=15)
    finally:
        gw.stop()
    assert result.done and result.content_chunks == 20
    assert returncode == 0
