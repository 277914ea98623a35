"""A keep-alive HTTP/1.1 connection pool for httpx, built on asyncio protocols and httptools.

httpx's default pool (httpcore) scans every pooled connection on each request and parses
responses in pure Python; at a thousand requests a second that was most of the gateway's CPU.
This transport keeps idle connections in a LIFO deque (O(1) checkout), parses with the C parser
that uvicorn already uses, and hands body bytes to httpx as they arrive, so streaming stays
unbuffered. httpx still owns the client API: URLs, headers, timeouts and the Response object.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

__all__ = ["Exchange", "HTTP1Pool", "PooledHTTP1Transport", "render_request"]

_HIGH_WATER = 1 << 20  # pause reading when this much body is waiting for the consumer


class _Connection(asyncio.Protocol):
    """One connection, one request at a time. Body pieces queue up until the reader takes them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.error: Exception | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost does the bookkeeping

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(httpx.RemoteProtocolError("server closed the connection before the response ended"))

    def pause_writing(self) -> None:  # pragma: no cover - requests are small
        pass

    def resume_writing(self) -> None:  # pragma: no cover
        pass

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.head_done.done():
            self.head_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        self._wake()

    # -- used by the transport --------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        if not self.head_done.done():
            self.head_done.set_exception(exc)
            self.head_done.exception()  # mark retrieved: the reader may already be gone
        self._wake()

    def start(self, request: bytes) -> None:
        if self.reused:
            self._reset()
            self.parser = httptools.HttpResponseParser(self)
        assert self.transport is not None
        self.transport.write(request)

    async def next_piece(self, timeout: float | None) -> bytes | None:
        """The next body piece, or None at the end of the message."""
        while not self.body:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                raise httpx.ReadTimeout("timed out waiting for the upstream") from None
            finally:
                self._waiter = None
        piece = self.body.popleft()
        self.buffered -= len(piece)
        if self._paused and self.buffered < _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return piece

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Exchange:
    """One request's response: status and headers now, the body as it arrives. `aclose` always."""

    __slots__ = ("_conn", "_pool", "_released", "_timeout", "headers", "status")

    def __init__(self, pool: HTTP1Pool, conn: _Connection, read_timeout: float | None):
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self._conn.next_piece(self._timeout)
            if piece is None:
                self._release()
                return
            yield piece

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self])

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._checkin(self._conn)

    async def aclose(self) -> None:
        self._release()


class HTTP1Pool:
    """Plain-HTTP (no TLS) keep-alive connections to one upstream origin."""

    def __init__(self, host: str, port: int, max_connections: int = 256):
        self.host = host
        self.port = port
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._closed = False

    async def request(self, payload: bytes, *, connect_timeout: float | None, read_timeout: float | None) -> Exchange:
        """Send a fully rendered request; returns when the response's headers have arrived."""
        try:
            async with asyncio.timeout(connect_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection to the upstream") from None
        try:
            for attempt in (0, 1):
                conn = await self._checkout(connect_timeout)
                conn.start(payload)
                try:
                    async with asyncio.timeout(read_timeout):
                        await conn.head_done
                except TimeoutError:
                    conn.close()
                    raise httpx.ReadTimeout("timed out waiting for the upstream's response") from None
                except httpx.RemoteProtocolError:
                    conn.close()
                    # A kept-alive connection the server had just closed: one fresh try is safe,
                    # since the server read nothing of this request.
                    if attempt == 0 and conn.reused and not conn.got_bytes:
                        continue
                    raise
                except BaseException:
                    conn.close()  # cancelled while waiting: the upstream must see us go
                    raise
                break
        except BaseException:
            self._slots.release()
            raise
        return Exchange(self, conn, read_timeout)

    async def _checkout(self, connect_timeout: float | None) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # most recently used first: least likely to have timed out
            if not conn.closed:
                conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self.host}:{self.port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn

    def _checkin(self, conn: _Connection) -> None:
        self._slots.release()
        if conn.reusable() and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class _ByteStream(httpx.AsyncByteStream):
    def __init__(self, exchange: Exchange):
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._exchange:
            yield piece

    async def aclose(self) -> None:
        await self._exchange.aclose()


class PooledHTTP1Transport(httpx.AsyncBaseTransport):
    """The pool as an httpx transport, so an `httpx.AsyncClient` can share its connections."""

    def __init__(self, pool: HTTP1Pool):
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol("this transport speaks plain HTTP only")
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        exchange = await self.pool.request(
            render_request(request), connect_timeout=timeouts.get("connect"), read_timeout=timeouts.get("read")
        )
        return httpx.Response(
            exchange.status,
            headers=list(exchange.headers),
            stream=_ByteStream(exchange),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


def render_request(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), target)]
    body = request.content  # the gateway always sends a complete body
    has_length = False
    for name, value in request.headers.raw:
        lname = name.lower()
        if lname == b"content-length":
            has_length = True
        elif lname == b"transfer-encoding":
            continue
        lines.append(name + b": " + value)
    if not has_length:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
