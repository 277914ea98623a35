"""One HTTP exchange over raw ASGI: read the body, answer, stream, wait, and notice a client that left.

Waiting is where disconnects are noticed: the first wait starts a watcher on `receive()`, which
returns `http.disconnect` when the client goes away; the watcher then cancels the handler's task,
and the app records the cancellation. Exchanges that never wait never pay for the watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from time import perf_counter
from typing import Any

__all__ = ["Exchange", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = b"application/json"
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
# Below this a timer would round to zero in uvloop (millisecond timers): send now instead.
_EARLY_S = 0.0005


class Exchange:
    __slots__ = (
        "_receive",
        "_send",
        "_task",
        "_watch",
        "chunks_sent",
        "completed",
        "done",
        "gone",
        "request_id",
        "scope",
        "started",
        "t0",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: bytes):
        self.scope = scope
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.t0 = perf_counter()
        self.started = False  # response headers sent
        self.chunks_sent = 0  # stream chunks written (the role chunk is not counted)
        self.done = False  # the response is complete (or abandoned on purpose)
        self.gone = False  # the client disconnected first
        self.completed = False  # a whole 2xx response went out
        self._watch: asyncio.Future[MutableMapping[str, Any]] | None = None
        self._task: asyncio.Task[Any] | None = None

    async def read_body(self) -> bytes:
        chunks = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _headers(self, extra: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(b"x-request-id", self.request_id), *extra]

    async def respond(
        self,
        status: int,
        body: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        content_type: bytes = _JSON,
    ) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self._headers(
                    [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
                ),
            }
        )
        self.done = True
        await self._send({"type": "http.response.body", "body": body})
        self.completed = status < 400

    async def respond_partial(self, body: bytes) -> None:
        """Promise `body` but send only its first half, then drop the connection (a disconnect fault)."""
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._headers([(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]),
            }
        )
        self.done = True
        await self._send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        # Returning now, with the body incomplete, makes the server close the connection.

    async def start_stream(self) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": 200, "headers": self._headers(_SSE_HEADERS)})

    async def write(self, data: bytes, chunks: int = 1) -> None:
        self.chunks_sent += chunks
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        self.done = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})
        self.completed = True

    def abandon(self) -> None:
        """Stop here without finishing the response: the server drops the connection."""
        self.done = True

    async def sleep_until(self, offset_s: float) -> None:
        """Wait until `offset_s` seconds after the request arrived; cancelled if the client leaves."""
        remaining = self.t0 + offset_s - perf_counter()
        if remaining <= _EARLY_S:
            return
        if self._watch is None:
            self._task = asyncio.current_task()
            self._watch = asyncio.ensure_future(self._receive())
            self._watch.add_done_callback(self._on_receive)
        while remaining > _EARLY_S:
            await asyncio.sleep(remaining)
            remaining = self.t0 + offset_s - perf_counter()

    def _on_receive(self, fut: asyncio.Future[MutableMapping[str, Any]]) -> None:
        if fut.cancelled() or fut.exception() is not None or self.done:
            return
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def close(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
