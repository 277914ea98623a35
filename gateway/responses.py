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
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import metrics
from gateway.completion import Completion, usage_of
from gateway.context import RequestContext
from gateway.errors import StreamStalled, SwitchyardError, UpstreamError, error_event
from gateway.relay import Attempt, Relay
from gateway.types import JSON

__all__ = ["ASGIResponse", "Finisher", "JSONBytesResponse", "RelayResponse", "SSEReplayResponse", "replay_events"]

log = logging.getLogger(__name__)

Finisher = Callable[[RequestContext, Completion, int], Awaitable[None]]

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer the stream
]
_DONE = b"data: [DONE]\n\n"
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


async def send_error(send: Send, ctx: RequestContext, exc: SwitchyardError) -> None:
    body = orjson.dumps(exc.to_dict())
    headers = [(b"content-type", b"application/json"), *_headers(ctx, exc.headers)]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class RelayResponse(ASGIResponse):
    def __init__(self, relay: Relay, ctx: RequestContext, body: JSON, finish: Finisher, *, assemble: bool):
        super().__init__()
        self.relay = relay
        self.ctx = ctx
        self.upstream_body = body
        self.finish = finish
        self.assemble = assemble
        self.status = 200
        self.started = False
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
        ctx = self.ctx
        try:
            attempt = await self._start(send)
        except SwitchyardError as exc:
            self.status = exc.status
            self.completion.error = exc
            if self.started:
                await self._end_with_error(send, exc)
            else:
                await send_error(send, ctx, exc)
            return
        try:
            if ctx.stream:
                await self._forward_stream(send, attempt)
            else:
                await self._send_plain(send, attempt)
        finally:
            self.relay.registry.release(attempt.lease)
            await attempt.aclose()

    async def _start(self, send: Send) -> Attempt:
        """Wait for the relay to commit; meanwhile send SSE comments if keep-alive is configured."""
        interval = self.relay.settings.keepalive_interval
        if not self.ctx.stream or interval is None:
            return await self.relay.start(self.ctx, self.upstream_body, assemble=self.assemble)
        task = asyncio.ensure_future(self.relay.start(self.ctx, self.upstream_body, assemble=self.assemble))
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=interval)
                if done:
                    return task.result()
                if not self.started:
                    await self._send_stream_start(send)
                await send({"type": "http.response.body", "body": _KEEPALIVE, "more_body": True})
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
        assembler = attempt.assembler
        assert assembler is not None
        self.completion.backend = attempt.backend
        if not self.started:
            await self._send_stream_start(send)
        strip_usage = not ctx.include_usage
        labels = (attempt.lease.public_model, attempt.backend)
        itl = metrics.labelled(metrics.ITL, *labels)
        last_token_at = attempt.first_token_at or time.perf_counter()
        for raw, parsed in attempt.held:
            await self._send_event(send, raw, parsed, strip_usage)
        try:
            async for raw, parsed in self.relay.rest(attempt):
                if assembler.feed(parsed):
                    now = time.perf_counter()
                    itl.observe(now - last_token_at)
                    last_token_at = now
                await self._send_event(send, raw, parsed, strip_usage)
        except SwitchyardError as exc:
            attempt.lease.backend.record_failure()
            metrics.labelled(metrics.UPSTREAM_REQUESTS, attempt.backend, "broken_stream").inc()
            await self._end_with_error(send, exc)
            return
        self._complete(attempt, assembler.response(ctx.model), last_token_at)
        await ctx.settle(self.completion)
        await send({"type": "http.response.body", "body": _DONE, "more_body": False})

    async def _send_event(self, send: Send, raw: bytes, parsed: JSON, strip_usage: bool) -> None:
        if strip_usage and parsed.get("usage"):
            if not parsed.get("choices"):
                return  # the usage-only chunk the gateway asked for on its own behalf
            raw = orjson.dumps({k: v for k, v in parsed.items() if k != "usage"})
        await send({"type": "http.response.body", "body": b"data: " + raw + b"\n\n", "more_body": True})

    async def _end_with_error(self, send: Send, exc: SwitchyardError) -> None:
        reason = "stall" if isinstance(exc, StreamStalled) else "upstream"
        metrics.labelled(metrics.STREAM_ERRORS, reason).inc()
        self.status = exc.status
        self.completion.error = exc
        await send({"type": "http.response.body", "body": error_event(exc), "more_body": False})

    async def _send_plain(self, send: Send, attempt: Attempt) -> None:
        self.completion.backend = attempt.backend
        try:
            response = orjson.loads(attempt.body)
        except orjson.JSONDecodeError:
            attempt.lease.backend.record_failure()
            exc = UpstreamError(f"backend '{attempt.backend}' sent a malformed response body")
            self.status = exc.status
            self.completion.error = exc
            await send_error(send, self.ctx, exc)
            return
        self._complete(attempt, response if isinstance(response, dict) else None, attempt.first_token_at)
        await self.ctx.settle(self.completion)
        headers = [(b"content-type", b"application/json"), *_headers(self.ctx)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": attempt.body})

    def _complete(self, attempt: Attempt, response: JSON | None, last_token_at: float | None) -> None:
        c = self.completion
        c.ok = True
        c.response = response
        end = time.perf_counter()
        c.duration = end - attempt.sent_at
        if response is not None:
            c.prompt_tokens, c.completion_tokens = usage_of(response)
            choices = response.get("choices") or [{}]
            c.finish_reason = choices[0].get("finish_reason") if choices else None
        labels = (attempt.lease.public_model, attempt.backend)
        metrics.E2E.labels(*labels).observe(c.duration)
        metrics.labelled(metrics.UPSTREAM_REQUESTS, attempt.backend, "ok").inc()
        if self.ctx.stream and attempt.first_token_at is not None:
            c.ttft = attempt.first_token_at - attempt.sent_at
            if c.completion_tokens and c.completion_tokens > 1 and last_token_at is not None:
                metrics.labelled(metrics.TPOT, *labels).observe(
                    (last_token_at - attempt.first_token_at) / (c.completion_tokens - 1)
                )
        if c.prompt_tokens:
            metrics.labelled(metrics.TOKENS, *labels, "prompt").inc(c.prompt_tokens)
        if c.completion_tokens:
            metrics.labelled(metrics.TOKENS, *labels, "completion").inc(c.completion_tokens)


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
    """A stored answer replayed as a real SSE stream of OpenAI chunks."""

    def __init__(self, ctx: RequestContext, events: list[bytes], finish: Finisher, completion: Completion):
        super().__init__()
        self.ctx, self.events, self.finish, self.completion = ctx, events, finish, completion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *_headers(self.ctx)]})
        for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await self.ctx.settle(self.completion)
        await send({"type": "http.response.body", "body": _DONE, "more_body": False})
        await self.finish(self.ctx, self.completion, 200)


def replay_events(response: JSON, *, include_usage: bool, endpoint: str = "chat/completions") -> list[bytes]:
    """Turn a stored chat.completion into the chunks a streaming backend would have sent."""
    head: dict[str, Any] = {
        "id": response.get("id", ""),
        "object": "chat.completion.chunk",
        "created": response.get("created", 0),
        "model": response.get("model", ""),
    }
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    chunks: list[JSON] = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    for piece in _pieces(message.get("content") or ""):
        chunks.append({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        chunks.append(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call.get("id"),
                                    "type": "function",
                                    "function": {"name": fn.get("name"), "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
        for piece in _pieces(fn.get("arguments") or "", size=16):
            chunks.append(
                {
                    **head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": i, "function": {"arguments": piece}}]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and response.get("usage"):
        chunks.append({**head, "choices": [], "usage": response["usage"]})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]


def _pieces(text: str, size: int = 0) -> list[str]:
    """Split text into token-sized pieces (a word and its leading space), or fixed-size slices."""
    if not text:
        return []
    if size:
        return [text[i : i + size] for i in range(0, len(text), size)]
    pieces: list[str] = []
    current = ""
    for ch in text:
        if ch in " \n" and current.strip():
            pieces.append(current)
            current = ""
        current += ch
    if current:
        pieces.append(current)
    return pieces
