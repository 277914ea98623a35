"""Running the gateway under uvicorn, with a graceful drain on SIGTERM and optional worker processes.

On the first SIGTERM or SIGINT: readiness turns false, new API requests get 503 + Retry-After,
in-flight requests (streams included) run to completion for up to `server.drain_seconds`, then
the process exits. A second signal exits at once.

With `server.workers > 1` the parent binds the port once and starts that many worker processes
sharing the socket, replacing any that dies; Prometheus runs in multiprocess mode so `/metrics`
on any worker reports all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.drain import DrainState
from gateway.settings import Settings, SettingsSource

__all__ = ["GatewayServer", "run"]

log = logging.getLogger(__name__)

_RESPAWN_DELAY_SECONDS = 1.0
_ABORT_GRACE_SECONDS = 1.0  # for requests cut short at the drain deadline to send their error


class _HeldTransport:
    """Stands in for a connection's transport while a response's head waits for its first body."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._held.append(data)

    def release(self) -> asyncio.Transport:
        if self._held:
            self._transport.write(b"".join(self._held))
            self._held.clear()
        return self._transport

    def close(self) -> None:  # a response on a `connection: close` request ends by closing
        self.release().close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, but a response's status line and headers go out in one write with
    its first body piece. uvicorn writes them apart: two segments, so a client woken by the headers
    parses them and must wake again for the first chunk, and a streamed answer's first token (which
    the relay sends together with the headers, once the upstream commits) arrives later than it need."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        send = cycle.send

        async def send_head_with_first_body(message: Any) -> None:
            if message["type"] == "http.response.start" and not cycle.response_started:
                transport = cycle.transport
                cycle.transport = _HeldTransport(transport)  # type: ignore[assignment]
                try:
                    await send(message)
                except BaseException:
                    cycle.transport = transport
                    raise
                return
            try:
                await send(message)
            finally:
                held = cycle.transport
                if isinstance(held, _HeldTransport):
                    cycle.transport = held.release()

        cycle.send = send_head_with_first_body  # type: ignore[method-assign]
        super()._start_asgi_task(cycle, app)


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: DrainState, drain_seconds: float):
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining or self._loop is None:
            super().handle_exit(sig, frame)  # second signal: stop now
            return
        self.drain.draining = True
        log.info(
            "signal %s: draining %d in-flight request(s), up to %.0fs", sig, self.drain.in_flight, self.drain_seconds
        )
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._finish_drain())

    async def _finish_drain(self) -> None:
        finished = await self.drain.wait_idle(self.drain_seconds)
        if not finished:
            log.warning("drain deadline passed with %d request(s) still running", self.drain.in_flight)
            self.drain.abort()  # each ends with an error event or a 503, not a cut connection
            await self.drain.wait_idle(_ABORT_GRACE_SECONDS)
        self.should_exit = True


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve_one(settings: Settings, sock: socket.socket | None, source: SettingsSource | None = None) -> None:
    from batching.allocator import unmap_large_blocks
    from gateway.app import create_app

    # Before anything loads: the embedder's tensors stay out of the heap, whose free-but-kept
    # memory would otherwise grow for hours (batching/allocator.py explains).
    unmap_large_blocks()
    _configure_logging(settings.server.log_level)
    drain = DrainState()
    app = create_app(settings, drain=drain, source=source)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
        http=CoalescingHttpToolsProtocol,
    )
    server = GatewayServer(config, drain, settings.server.drain_seconds)
    server.run(sockets=[sock] if sock is not None else None)


def run(settings: Settings, source: SettingsSource | None = None) -> int:
    """Serve until signalled (SIGHUP reloads `source`). Returns the process exit status."""
    workers = settings.server.workers
    if workers == 1:
        _serve_one(settings, None, source)
        return 0
    if any(b.type == "local" for b in settings.backends):
        raise SystemExit("server.workers > 1 cannot be combined with a local backend (one engine per host)")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="switchyard-metrics-"))
    sock = socket.socket(socket.AF_INET6 if ":" in settings.server.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server.host, settings.server.port))
    sock.set_inheritable(True)
    return _supervise(settings, sock, workers, source)


def _supervise(settings: Settings, sock: socket.socket, workers: int, source: SettingsSource | None) -> int:
    """Keep `workers` gateway processes serving `sock`: a worker that dies is replaced; the first
    SIGTERM or SIGINT is passed on to all of them (each drains), and the parent waits. SIGHUP is
    passed on too: each worker reloads its configuration."""
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    stopping = False

    def spawn(index: int) -> None:
        proc = ctx.Process(target=_serve_one, args=(settings, sock, source), name=f"gateway-{index}")
        proc.start()
        procs[index] = proc

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = stopping or sig != signal.SIGHUP
        for proc in procs.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, sig)

    for i in range(workers):
        spawn(i)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    failed = False
    while procs:
        multiprocessing.connection.wait([p.sentinel for p in procs.values()])
        for index, proc in list(procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del procs[index]
            # A worker still starting has no handler for the signal yet, so the forwarded SIGTERM
            # ends it outright; it had not begun serving, so nothing was lost.
            if proc.exitcode != 0 and not (stopping and proc.exitcode == -signal.SIGTERM):
                failed = True
                log.error("gateway worker %d exited with status %s", index, proc.exitcode)
            if not stopping:
                time.sleep(_RESPAWN_DELAY_SECONDS)  # a worker that dies at once must not spin
                log.warning("restarting gateway worker %d", index)
                spawn(index)
    return 1 if failed else 0
