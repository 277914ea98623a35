"""A lean HTTP/1.1 client for load generation: keep-alive connections, callbacks per body piece.

Why not httpx: at thousands of streamed requests per second its per-chunk async iteration costs more
than the server being measured. Here a connection is an `asyncio.Protocol` feeding the C parser of
`httptools`; every decoded body piece goes straight to the caller's callback together with the time
it arrived, so timestamps are taken once per socket read, before any Python-level parsing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from time import perf_counter
from typing import Any

import httptools

__all__ = ["BodyCallback", "Connection", "HttpError", "Pool", "Response", "render_request"]

BodyCallback = Callable[[bytes, float], None]


class HttpError(Exception):
    """A transport-level failure; `kind` is one of connect, timeout, disconnect, protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Response:
    __slots__ = ("body", "headers", "keep_alive", "status", "t_headers")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.keep_alive = True
        self.t_headers = 0.0  # perf_counter when the headers were parsed


def render_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """The request bytes, headers included; built once per distinct request and reused."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._on_body: BodyCallback | None = None
        self._done: asyncio.Future[Response] | None = None
        self._now = 0.0
        self.closed = False

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._now = perf_counter()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError("protocol", f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError("disconnect", "connection closed before the response was complete"))

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        r = self._response
        if r is not None:
            r.status = self._parser.get_status_code()
            r.keep_alive = self._parser.should_keep_alive()
            r.t_headers = self._now

    def on_body(self, body: bytes) -> None:
        if self._on_body is not None:
            self._on_body(body, self._now)
        elif self._response is not None:
            self._response.body += body

    def on_message_complete(self) -> None:
        done, r = self._done, self._response
        self._done = self._response = self._on_body = None
        if r is not None and not r.keep_alive:
            self.close()
        if done is not None and not done.done():
            done.set_result(r)  # type: ignore[arg-type]

    # --- client side
    def _fail(self, exc: HttpError) -> None:
        done = self._done
        self._done = self._response = self._on_body = None
        if done is not None and not done.done():
            done.set_exception(exc)
        if not self.closed:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, on_body: BodyCallback | None) -> asyncio.Future[Response]:
        """Write a rendered request; the future resolves when the whole response has arrived."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._response = Response()
        self._on_body = on_body
        self._parser = httptools.HttpResponseParser(self)
        assert self.transport is not None
        self.transport.write(data)
        return self._done


class Pool:
    """Idle keep-alive connections to one host:port; new ones opened on demand."""

    def __init__(self, host: str, port: int, connect_timeout: float = 10.0):
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self._idle: list[Connection] = []
        self.opened = 0

    async def acquire(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(Connection, self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise HttpError("connect", f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self.opened += 1
        return conn

    def release(self, conn: Connection) -> None:
        if not conn.closed:
            self._idle.append(conn)

    async def request(self, data: bytes, on_body: BodyCallback | None = None, timeout: float | None = None) -> Response:
        """Send `data` on a pooled connection; raise `HttpError` on transport failure or timeout."""
        conn = await self.acquire()
        fut = conn.send(data, on_body)
        handle: Any = None
        if timeout is not None:
            handle = asyncio.get_running_loop().call_later(timeout, _expire, conn, fut)
        try:
            response = await fut
        except BaseException:
            conn.close()
            raise
        finally:
            if handle is not None:
                handle.cancel()
        self.release(conn)
        return response

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _expire(conn: Connection, fut: asyncio.Future[Response]) -> None:
    if not fut.done():
        fut.set_exception(HttpError("timeout", "no complete response within the timeout"))
        conn.close()
