"""The gateway's HTTP server sends a response's head together with its first body piece: a client
sees no bytes until the first chunk exists, then both at once (one write, not two)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn

from gateway.server import CoalescingHttpToolsProtocol


async def test_headers_wait_for_the_first_body_piece_and_leave_with_it() -> None:
    head_sent, release = asyncio.Event(), asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        head_sent.set()
        await release.wait()  # set once, by the first request
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=CoalescingHttpToolsProtocol, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10.0):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for "listening"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            async with asyncio.timeout(5.0):
                await head_sent.wait()
            try:  # loopback delivers a write at once: had the head gone out, it would be readable now
                early = sock.recv(1024, socket.MSG_PEEK)
            except BlockingIOError:
                early = b""
            assert early == b""
            release.set()
            async with asyncio.timeout(5.0):
                first = await loop.sock_recv(sock, 65536)
                assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n5\r\nfirst\r\n" in first
                whole = first
                while not whole.endswith(b"0\r\n\r\n"):
                    whole += await loop.sock_recv(sock, 65536)
            assert b"second" in whole

        # a client that asks for the connection to close gets the whole response before the close
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            whole = b""
            async with asyncio.timeout(5.0):
                while chunk := await loop.sock_recv(sock, 65536):
                    whole += chunk
            assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b"6\r\nsecond\r\n0\r\n\r\n")
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10.0)
