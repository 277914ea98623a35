"""The gateway's HTTP/1.1 client (gateway/upstreams/http1.py) against scripted servers on loopback:
keep-alive reuse, chunked and close-delimited bodies, idle expiry, a server that drops a kept-alive
connection, a server that closes mid-body, cancellation, back-pressure on a slow reader, timeouts and
TLS; and the OpenAI transport on top of it sending every header it was given."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from gateway.dialect import CHAT
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.http1 import (
    ConnectError,
    Disconnected,
    HttpTimeout,
    Pool,
    encode_headers,
    render_request,
)
from gateway.upstreams.openai_http import OpenAIHTTPTransport

TLS = Path(__file__).resolve().parents[1] / "support" / "tls"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server running `handler` for each connection; counts connections and their ends."""

    def __init__(self, handler: Handler, tls: bool = False):
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.closed = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []  # request line, headers, body
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        context = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._notify()
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed += 1
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (bounded) until `condition()` holds; checked whenever a connection opens or ends or a request comes."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self.changed.wait()

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request; False when the client closed the connection instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        line, *fields = head[:-4].split(b"\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (f.partition(b":") for f in fields)}
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        self.requests.append((line, headers, body))
        self._notify()
        return True


def respond(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        writer.write(respond(b"hello"))
        await writer.drain()


def get(path: str = "/x", host: str = "127.0.0.1") -> bytes:
    return render_request("GET", path, encode_headers({"host": host}))


async def test_connections_are_kept_alive_and_reused() -> None:
    async with Server(keep_alive) as server:
        pool = Pool("127.0.0.1", server.port)
        for _ in range(3):
            exchange = await pool.request(get())
            assert (exchange.status, await exchange.read()) == (200, b"hello")
        assert server.connections == 1 and pool.opened == 1
        await pool.aclose()
        await server.until(lambda: server.closed == 1)


async def test_chunked_body_arrives_piece_by_piece_before_the_server_finishes() -> None:
    next_piece = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"first"))
        await next_piece.wait()  # the rest only once the client has the first piece
        writer.write(chunk(b"second") + b"0\r\n\r\n")
        await server.read_request(reader)

    async with Server(handler) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        pieces = []
        async for piece in exchange:
            pieces.append(piece)
            next_piece.set()
        assert pieces == [b"first", b"second"]
        assert pool.idle == 1  # the whole message came: the connection is kept
        await pool.aclose()


async def test_a_body_that_ends_with_the_connection_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        # returning closes the connection: that ends the body

    async with Server(handler) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        assert await exchange.read() == b"part one, part two"
        assert pool.idle == 0
        await pool.aclose()


async def test_a_server_that_closes_mid_body_is_an_error_not_a_short_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"only this"))
        await writer.drain()

    async with Server(handler) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        got = []
        with pytest.raises(Disconnected):
            async for piece in exchange:
                got.append(piece)
        assert got == [b"only this"]
        assert pool.idle == 0
        await pool.aclose()

        # a declared length the server does not deliver is the same failure
        async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes.")
            await writer.drain()

    async with Server(short) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        with pytest.raises(Disconnected):
            await exchange.read()
        await pool.aclose()


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_transparently() -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(respond(b"ok"))  # says keep-alive, then closes anyway (a server's idle timeout)
        await writer.drain()

    async with Server(one_per_connection) as server:
        pool = Pool("127.0.0.1", server.port, keepalive_expiry=60.0)
        assert await (await pool.request(get())).read() == b"ok"
        await server.until(lambda: server.closed == 1)
        # The pooled connection is dead; the client may or may not have seen the FIN yet. Either way
        # the request goes out on a fresh connection and succeeds.
        assert await (await pool.request(get())).read() == b"ok"
        assert server.connections == 2 and len(server.requests) == 2
        await pool.aclose()


async def test_idle_connections_expire_even_when_no_request_comes() -> None:
    async with Server(keep_alive) as server:
        pool = Pool("127.0.0.1", server.port, keepalive_expiry=0.05)
        assert await (await pool.request(get())).read() == b"hello"
        assert pool.idle == 1
        await server.until(lambda: server.closed == 1)  # the pool closed it on its own
        assert pool.idle == 0
        assert await (await pool.request(get())).read() == b"hello"
        assert server.connections == 2
        await pool.aclose()


async def test_an_idle_connection_past_its_expiry_is_not_reused() -> None:
    async with Server(keep_alive) as server:
        loop = asyncio.get_running_loop()
        pool = Pool("127.0.0.1", server.port, keepalive_expiry=30.0)
        assert await (await pool.request(get())).read() == b"hello"
        for conn in pool._idle:  # as if it had sat idle for a minute
            conn.idle_since = loop.time() - 60.0
        assert await (await pool.request(get())).read() == b"hello"
        assert server.connections == 2
        await server.until(lambda: server.closed == 1)
        await pool.aclose()


async def test_cancelling_a_request_closes_its_connection_and_frees_its_slot() -> None:
    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        if len(server.requests) == 1:
            await reader.read()  # never answer the first request; wait for the client to go
            return
        writer.write(respond(b"second"))
        await server.read_request(reader)

    async with Server(slow_then_fast) as server:
        pool = Pool("127.0.0.1", server.port, max_connections=1)
        waiting = asyncio.create_task(pool.request(get()))
        await server.until(lambda: len(server.requests) == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await server.until(lambda: server.closed == 1)  # the server saw the client go
        exchange = await pool.request(get(), connect_timeout=1.0)  # the only slot is free again
        assert await exchange.read() == b"second"
        await pool.aclose()


async def test_leaving_a_body_unread_closes_the_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(chunk(b"x" * 100))
            await writer.drain()
            await asyncio.sleep(0.01)  # a paced stream, as an LLM sends tokens

    async with Server(endless) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        async for _ in exchange:
            break
        await exchange.aclose()
        await server.until(lambda: server.closed == 1)
        assert pool.idle == 0
        await pool.aclose()


async def test_a_slow_reader_pushes_back_on_the_server() -> None:
    size = 64 * 1024 * 1024
    sent_all = asyncio.Event()

    async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        block = b"y" * (1 << 20)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        sent_all.set()
        await server.read_request(reader)

    async with Server(bulk) as server:
        pool = Pool("127.0.0.1", server.port)
        exchange = await pool.request(get())
        transport = exchange._conn.transport
        assert transport is not None
        async with asyncio.timeout(5.0):
            while transport.is_reading():  # noqa: ASYNC110 - no event says "paused"; bounded by the timeout
                await asyncio.sleep(0.005)  # the client pauses at its high-water mark
        assert not sent_all.is_set()  # so the server is held up: it cannot have written everything
        received = 0
        async for piece in exchange:
            received += len(piece)
        assert received == size and sent_all.is_set()
        await pool.aclose()


async def test_timeouts_and_refused_connections_are_named() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        await reader.read()

    async with Server(silent) as server:
        pool = Pool("127.0.0.1", server.port)
        with pytest.raises(HttpTimeout) as caught:
            await pool.request(get(), read_timeout=0.05)
        assert not caught.value.connecting and caught.value.kind == "timeout"
        await pool.aclose()
        port = server.port
    with pytest.raises(ConnectError):
        await Pool("127.0.0.1", port).request(get())


async def test_tls_upstreams_use_the_same_client() -> None:
    context = ssl.create_default_context(cafile=str(TLS / "cert.pem"))
    async with Server(keep_alive, tls=True) as server:
        pool = Pool("localhost", server.port, ssl=context)
        for _ in range(2):
            assert await (await pool.request(get(host=pool.authority))).read() == b"hello"
        assert server.connections == 1
        await pool.aclose()
        # an upstream whose certificate is not trusted is refused
        untrusting = Pool("localhost", server.port, ssl=ssl.create_default_context())
        with pytest.raises(ConnectError, match="TLS"):
            await untrusting.request(get())


def test_headers_that_would_split_the_request_are_refused() -> None:
    assert encode_headers({"traceparent": "00-abc-def-01"}) == b"traceparent: 00-abc-def-01\r\n"
    for bad in ({"x-a": "1\r\nx-injected: 2"}, {"x a": "1"}, {"x-a\n": "1"}, {"x-a": "nul\x00"}):
        with pytest.raises(ValueError):
            encode_headers(bad)


# -- the OpenAI transport on top of it ------------------------------------------------------------


def sse(*payloads: bytes) -> bytes:
    return b"".join(chunk(b"data: " + p + b"\n\n") for p in payloads) + b"0\r\n\r\n"


async def openai_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while await server.read_request(reader):
        line = server.requests[-1][0]
        if line.startswith(b"GET /v1/models"):
            writer.write(respond(orjson.dumps({"data": [{"id": "m1"}, {"id": "m2"}]})))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + sse(b'{"n":1}', b"[DONE]"))
        await writer.drain()


def call(**headers: str) -> UpstreamCall:
    body = {"model": "m1", "messages": [], "stream": True}
    return UpstreamCall("chat/completions", body, stream=True, request_id="req-1", headers=headers, dialect=CHAT)


async def collect(events: AsyncIterator[bytes]) -> list[bytes]:
    return [e async for e in events]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_every_upstream_request_carries_the_calls_headers(tls: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "cert.pem"))  # the system trust store, for the test's CA
    async with Server(openai_upstream, tls=tls) as server:
        scheme = "https" if tls else "http"
        transport = OpenAIHTTPTransport("b", f"{scheme}://localhost:{server.port}/v1", api_key="sk-up")
        response = await transport.send(call(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        assert await collect(response.events()) == [b'{"n":1}']
        await response.aclose()
        assert await transport.list_models() == ["m1", "m2"]
        (line, headers, body), (models_line, models_headers, _) = server.requests
        assert line == b"POST /v1/chat/completions HTTP/1.1"
        assert headers[b"traceparent"] == b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert headers[b"x-request-id"] == b"req-1"
        assert headers[b"authorization"] == b"Bearer sk-up"
        assert headers[b"host"] == f"localhost:{server.port}".encode()
        assert orjson.loads(body)["model"] == "m1"
        assert models_line == b"GET /v1/models HTTP/1.1" and models_headers[b"authorization"] == b"Bearer sk-up"
        assert server.connections == 1  # both calls on one kept-alive connection
        await transport.aclose()


async def test_a_call_header_that_would_split_the_request_fails_the_call() -> None:
    async with Server(openai_upstream) as server:
        transport = OpenAIHTTPTransport("b", f"http://127.0.0.1:{server.port}/v1")
        with pytest.raises(UpstreamError, match="invalid HTTP header"):
            await transport.send(call(traceparent="x\r\nx-evil: 1"))
        assert server.requests == []
        await transport.aclose()


async def test_upstream_failures_map_to_the_gateways_errors() -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b'data: {"n":1}\n\n'))
        await writer.drain()  # and the connection closes without [DONE]

    async with Server(broken) as server:
        transport = OpenAIHTTPTransport("b", f"http://127.0.0.1:{server.port}/v1", read_timeout=5.0)
        response = await transport.send(call())
        events = response.events()
        assert await anext(events) == b'{"n":1}'
        with pytest.raises(UpstreamError, match="closed the connection"):
            await anext(events)
        await response.aclose()
        await transport.aclose()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        await reader.read()

    async with Server(silent) as server:
        transport = OpenAIHTTPTransport("b", f"http://127.0.0.1:{server.port}/v1", read_timeout=0.05)
        with pytest.raises(UpstreamTimeout, match="waiting for backend 'b'"):
            await transport.send(call())
        await transport.aclose()
