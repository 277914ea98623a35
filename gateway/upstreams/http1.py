"""The one HTTP/1.1 client: keep-alive connections over asyncio protocols, parsed by httptools' C parser.

Every upstream call the gateway makes goes through it, plain HTTP and TLS alike, and so does the load
generator in `bench/loadgen`. Why not a general-purpose client: measured in the same run, httpx costs
the gateway about ten times the CPU per call and aiohttp two to three times (bench/RESULTS.md, issue 13);
at thousands of calls a second the client was most of the gateway's work. This one keeps idle
connections in a LIFO deque (O(1) checkout), hands body bytes to the reader as they arrive (no
buffering, with back-pressure on the socket), and notes when each socket read arrived, so a load
generator's timings are taken before any Python-level parsing.

Connections idle longer than `keepalive_expiry` are closed rather than reused: servers drop idle
connections on their own schedule (uvicorn after 5 s), and a request sent just as the server closes
fails. Should one still be caught by that race (the server closed before sending a byte), the request
is retried once on a fresh connection.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Iterable, Mapping
from time import perf_counter
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectError",
    "Disconnected",
    "Exchange",
    "HttpError",
    "HttpTimeout",
    "Pool",
    "ProtocolError",
    "encode_headers",
    "get",
    "render_request",
]

_HIGH_WATER = 1 << 20  # pause reading when this much body is waiting for the consumer
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class HttpError(Exception):
    """A transport failure. `kind` names it in a word: connect, timeout, disconnect or protocol."""

    kind = "protocol"


class ConnectError(HttpError):
    kind = "connect"


class HttpTimeout(HttpError):
    kind = "timeout"

    def __init__(self, message: str, *, connecting: bool):
        super().__init__(message)
        self.connecting = connecting  # still connecting (or waiting for a free connection), not reading


class Disconnected(HttpError):
    """The server closed the connection before the response was complete."""

    kind = "disconnect"


class ProtocolError(HttpError):
    kind = "protocol"


def encode_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """`name: value\\r\\n` lines. Refuses what would split the request (CR, LF, NUL, a bad name)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = []
    for name, value in items:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid HTTP header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def render_request(method: str, target: str | bytes, head: bytes, body: bytes = b"") -> bytes:
    """A whole request: the request line, `head` (from `encode_headers`, host included), the length, the body."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    return b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (method.encode(), target, head, len(body), body)


class _Connection(asyncio.Protocol):
    """One connection, one request at a time. Body pieces queue up, with their arrival times, until
    the reader takes them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._now = 0.0
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.t_headers = 0.0
        self.head_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.body: collections.deque[tuple[bytes, float]] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.error: HttpError | None = None
        self._until_close = False  # neither a length nor chunked: the body ends when the server closes
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write: send it now

    def data_received(self, data: bytes) -> None:
        self._now = perf_counter()
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost does the bookkeeping

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self._until_close and self.head_done.done() and self.error is None:
            self.complete = True  # a body delimited by the end of the connection has ended
            self._wake()
            return
        self._fail(Disconnected("the server closed the connection before the response ended"))

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.t_headers = self._now
        framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
        self._until_close = not framed and self.status >= 200 and self.status not in (204, 304)
        if not self.head_done.done():
            self.head_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append((body, self._now))
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        self._wake()

    # -- used by the pool and the exchange ---------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: HttpError) -> None:
        if self.error is None:
            self.error = exc
        if not self.head_done.done():
            self.head_done.set_exception(exc)
            self.head_done.exception()  # mark retrieved: the requester may already be gone
        self._wake()

    def start(self, request: bytes) -> None:
        if self.reused:
            self._reset()
        assert self.transport is not None
        self.transport.write(request)

    async def next_piece(self, timeout: float | None) -> tuple[bytes, float] | None:
        """The next body piece and when it arrived, or None at the end of the message."""
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
                raise HttpTimeout("timed out waiting for the server", connecting=False) from None
            finally:
                self._waiter = None
        piece = self.body.popleft()
        self.buffered -= len(piece[0])
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
    """One request's response: status and headers now, the body as it arrives. Always `aclose` (or
    read to the end): that returns the connection to the pool, or closes it if the body was left."""

    __slots__ = ("_conn", "_pool", "_released", "_timeout", "headers", "status", "t_headers")

    def __init__(self, pool: Pool, conn: _Connection, read_timeout: float | None):
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self._released = False
        self.status = conn.status
        self.headers = conn.headers
        self.t_headers = conn.t_headers  # perf_counter of the read that completed the headers

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case), if any."""
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    async def timed(self) -> AsyncIterator[tuple[bytes, float]]:
        """Body pieces with the perf_counter of the socket read that brought each."""
        try:
            while True:
                piece = await self._conn.next_piece(self._timeout)
                if piece is None:
                    return
                yield piece
        finally:
            self._release()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                piece = await self._conn.next_piece(self._timeout)
                if piece is None:
                    return
                yield piece[0]
        finally:
            self._release()

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self])

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool._checkin(self._conn)

    async def aclose(self) -> None:
        self._release()


class Pool:
    """Keep-alive connections to one origin (`http` or, with `ssl`, `https`)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        max_connections: int | None = None,
        keepalive_expiry: float = 4.0,
    ):
        self.host = host
        self.port = port
        self.ssl = ssl
        self.keepalive_expiry = keepalive_expiry
        self.opened = 0  # connections opened so far
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._max_idle = max_connections or 1024
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    def for_url(cls, url: str, **kwargs: object) -> Pool:
        """A pool for `url`'s origin: http, or https verified against the system's trusted CAs."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = ssl_module.create_default_context() if parts.scheme == "https" else None
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, ssl=tls, **kwargs)  # type: ignore[arg-type]

    @property
    def authority(self) -> str:
        """What the `host` header says."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.ssl is not None else 80
        return host if self.port == default else f"{host}:{self.port}"

    async def request(
        self, payload: bytes, *, connect_timeout: float | None = None, read_timeout: float | None = None
    ) -> Exchange:
        """Send a fully rendered request (`render_request`); returns once the response's headers arrived.

        `connect_timeout` bounds the wait for a free slot and the connect (TLS handshake included);
        `read_timeout` bounds each wait for the server, for the headers and then for every body piece."""
        if self._slots is not None:
            try:
                async with asyncio.timeout(connect_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise HttpTimeout("no free connection to the server", connecting=True) from None
        try:
            for attempt in (0, 1):
                conn = await self._checkout(connect_timeout)
                conn.start(payload)
                try:
                    async with asyncio.timeout(read_timeout):
                        await conn.head_done
                except TimeoutError:
                    conn.close()
                    raise HttpTimeout("timed out waiting for the server's response", connecting=False) from None
                except Disconnected:
                    conn.close()
                    # A kept-alive connection the server had just closed: one fresh try is safe,
                    # since the server answered nothing to this request.
                    if attempt == 0 and conn.reused and not conn.got_bytes:
                        continue
                    raise
                except BaseException:
                    conn.close()  # cancelled while waiting, or a bad response: the server must see us go
                    raise
                break
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise
        return Exchange(self, conn, read_timeout)

    async def _checkout(self, connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: least likely to have been dropped
            if conn.closed:
                continue
            if now - conn.idle_since > self.keepalive_expiry:
                conn.close()  # and every connection left is older still
                self._close_idle()
                break
            conn.reused = True
            return conn
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError:
            raise HttpTimeout(f"timed out connecting to {self.authority}", connecting=True) from None
        except ssl_module.SSLError as exc:
            raise ConnectError(f"TLS with {self.authority} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.authority}: {exc.strerror or exc}") from None
        self.opened += 1
        return conn

    def _checkin(self, conn: _Connection) -> None:
        if self._slots is not None:
            self._slots.release()
        if conn.reusable() and not self._closed and len(self._idle) < self._max_idle:
            loop = asyncio.get_running_loop()
            conn.idle_since = loop.time()
            self._idle.append(conn)
            if self._sweep is None:
                self._sweep = loop.call_at(conn.idle_since + self.keepalive_expiry, self._expire)
        else:
            conn.close()

    def _expire(self) -> None:
        """Close the connections idle past the expiry, oldest first; come back for the next one."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self.keepalive_expiry
        while self._idle and (self._idle[0].closed or self._idle[0].idle_since <= deadline):
            self._idle.popleft().close()
        if self._idle:
            self._sweep = loop.call_at(self._idle[0].idle_since + self.keepalive_expiry, self._expire)

    def _close_idle(self) -> None:
        while self._idle:
            self._idle.pop().close()

    @property
    def idle(self) -> int:
        """Open connections waiting for a request."""
        return sum(1 for c in self._idle if not c.closed)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._close_idle()


async def get(url: str, *, timeout: float) -> tuple[int, bytes]:
    """One GET on a connection of its own, read whole: for control-plane calls that need no pool
    (a replica's /health before it joins, an engine's /metrics)."""
    return await request("GET", url, timeout=timeout)


async def request(
    method: str, url: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None, timeout: float
) -> tuple[int, bytes]:
    """One request on a connection of its own, the answer read whole (control-plane calls, the CLI)."""
    pool = Pool.for_url(url, max_connections=1)
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        payload = render_request(method, target, encode_headers({"host": pool.authority, **(headers or {})}), body)
        exchange = await pool.request(payload, connect_timeout=timeout, read_timeout=timeout)
        return exchange.status, await exchange.read()
    finally:
        await pool.aclose()
