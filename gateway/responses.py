"""ASGI responses that write relayed and cached answers to the client.

`RelayResponse` is a raw ASGI app rather than Starlette's StreamingResponse because it must
(1) hold the status line until the relay has committed to a backend, so failures before the first
byte still become proper HTTP errors, (2) forward each upstream event the moment it arrives, and
(3) listen for the client going away the whole time, including while nothing is being sent, so a
disconnect cancels the upstream call within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.attempt import Attempt, outcome_of
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import StreamStalled, SwitchyardError
from gateway.relay import Relay
from gateway.types import JSON

__all__ = ["ASGIResponse", "Finisher", "JSONBytesResponse", "RelayResponse", "SSEReplayResponse"]

log = logging.getLogger(__name__)

Finisher = Callable[[RequestContext, Completion, int], Awaitable[None]]

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer the stream
]
_KEEPALIVE = b": keep-alive\n\n"


class ASGIResponse(Response):
    """Our responses write to ASGI themselves; subclassing Response only tells FastAPI to pass
    them through instead of serialising them."""

    def __init__(self) -> None:
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def _headers(ctx: RequestContext, extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    out = [(k.encode(), v.encode()) for k, v in ctx.response_headers.items()]
    if extra:
        out.extend((k.encode(), v.encode()) for k, v in extra.items())
    return out


async def _send_error(send: Send, ctx: RequestContext, exc: SwitchyardError) -> None:
    """An error response in the shape of the API the client called."""
    status, headers, body = ctx.dialect.render_error(exc, _headers(ctx))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class RelayResponse(ASGIResponse):
    """Writes what the relay's committed attempt produces to the client: SSE events as they
    arrive, or the whole body. It records nothing about backends; the attempt does."""

    def __init__(self, relay: Relay, ctx: RequestContext, body: JSON, finish: Finisher):
        super().__init__()
        self.relay = relay
        self.ctx = ctx
        self.upstream_body = body
        self.finish = finish
        self.status = 200
        self.started = False
        self.last_event: JSON | None = None  # the last event the client was sent
        self.completion = Completion(ctx.endpoint, ctx.model, None, ok=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The client may leave at any moment, also while nothing is being sent: a watcher on
        # `receive` cancels this task then, which cancels the upstream call with it.
        task = asyncio.current_task()
        assert task is not None
        state = {"done": False, "left": False}

        def client_left(watcher: asyncio.Future[None]) -> None:
            if not state["done"] and not watcher.cancelled() and watcher.exception() is None:
                state["left"] = True
                task.cancel()

        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            await self._serve(send)
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            task.uncancel()
            self.completion.cancelled = True
            self.status = 499
            metrics.labelled(metrics.CANCELLATIONS, self.ctx.endpoint).inc()
        finally:
            state["done"] = True
            watcher.cancel()
            await self.finish(self.ctx, self.completion, self.status)

    async def _serve(self, send: Send) -> None:
        try:
            attempt = await self._commit(send)
        except SwitchyardError as exc:
            await self._fail(send, exc)
            return
        async with attempt:
            try:
                if self.ctx.stream:
                    await self._forward_stream(send, attempt)
                else:
                    await self._send_plain(send, attempt)
            except SwitchyardError as exc:
                await self._fail(send, exc)

    async def _commit(self, send: Send) -> Attempt:
        """Wait for the relay to commit; meanwhile send SSE comments if keep-alive is configured."""
        interval = self.relay.settings.keepalive_interval
        if not self.ctx.stream or interval is None:
            return await self.relay.commit(self.ctx, self.upstream_body)
        task = asyncio.ensure_future(self.relay.commit(self.ctx, self.upstream_body))
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=interval)
                if done:
                    return task.result()
                if not self.started:
                    await self._send_stream_start(send)
                await send({"type": "http.response.body", "body": _KEEPALIVE, "more_body": True})
        except BaseException:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().aclose()  # committed just as this request went away
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _send_stream_start(self, send: Send) -> None:
        self.started = True
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *_headers(self.ctx)]})

    async def _forward_stream(self, send: Send, attempt: Attempt) -> None:
        ctx = self.ctx
        self.completion.backend = attempt.backend
        if not self.started:
            await self._send_stream_start(send)
        dialect, include_usage = ctx.dialect, ctx.include_usage
        held: list[bytes] = []  # closing events, sent once the request is settled
        async for raw, parsed in attempt.events(self.relay.settings.stall_timeout):
            framed = dialect.frame(raw, parsed, include_usage)
            if framed is not None:
                self.last_event = parsed
                if dialect.holds(parsed):
                    held.append(framed)
                else:
                    await send({"type": "http.response.body", "body": framed, "more_body": True})
        outcome_of(attempt, self.completion)
        await ctx.settle(self.completion)
        await send({"type": "http.response.body", "body": b"".join((*held, dialect.stream_end)), "more_body": False})

    async def _fail(self, send: Send, exc: SwitchyardError) -> None:
        """Tell the client: an error response before anything was sent, an error event after."""
        self.status = exc.status
        self.completion.error = exc
        if not self.started:
            await _send_error(send, self.ctx, exc)
            return
        reason = "stall" if isinstance(exc, StreamStalled) else "upstream"
        metrics.labelled(metrics.STREAM_ERRORS, reason).inc()
        body = self.ctx.dialect.error_event(exc, self.last_event)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_plain(self, send: Send, attempt: Attempt) -> None:
        outcome_of(attempt, self.completion)
        await self.ctx.settle(self.completion)
        headers = [(b"content-type", b"application/json"), *_headers(self.ctx)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": attempt.body})


class JSONBytesResponse(ASGIResponse):
    """A ready JSON body (a cache hit or a local answer) with the request's headers."""

    def __init__(self, ctx: RequestContext, body: bytes, finish: Finisher, completion: Completion):
        super().__init__()
        self.ctx, self.body, self.finish, self.completion = ctx, body, finish, completion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.ctx.settle(self.completion)
        headers = [(b"content-type", b"application/json"), *_headers(self.ctx)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
        await self.finish(self.ctx, self.completion, 200)


class SSEReplayResponse(ASGIResponse):
    """A stored answer replayed as a real SSE stream in the client's API."""

    def __init__(self, ctx: RequestContext, events: list[bytes], finish: Finisher, completion: Completion):
        super().__init__()
        self.ctx, self.events, self.finish, self.completion = ctx, events, finish, completion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *_headers(self.ctx)]})
        for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await self.ctx.settle(self.completion)
        await send({"type": "http.response.body", "body": self.ctx.dialect.stream_end, "more_body": False})
        await self.finish(self.ctx, self.completion, 200)
