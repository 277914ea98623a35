"""The gateway's edge: the one ASGI app uvicorn serves.

Every request gets an `x-request-id` (the client's, or a new one) on its response, is refused
with 503 + Retry-After while the gateway drains, and has its body capped. Then the OpenAI POST
endpoints, which carry the traffic, are served here directly; everything else (models, health,
readiness, metrics, the OpenAPI description) goes to FastAPI. FastAPI's router, dependency
resolution and middleware stack cost about as much per request as the whole pipeline, so the
hot path skips them; both the edge and the OpenAPI description read the one route table
(gateway/routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.drain import DrainState
from gateway.errors import MethodNotAllowed, Overloaded, PayloadTooLarge, SwitchyardError, error_event, send_error
from gateway.routes import ApiRoute, allowed_methods, route_for
from gateway.telemetry.spans import CURRENT_TRACE, RequestTrace

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = ["Edge", "read_body"]

log = logging.getLogger(__name__)

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _VALID_ID.match(value):
                return bytes(value)
            break  # unsafe to echo into headers and logs: make a new one
    return os.urandom(16).hex().encode()


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes before reading them all."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise SwitchyardError("The client went away while sending its request.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Progress:
    """How far a response got: its status and headers once sent, and whether its last byte went out."""

    __slots__ = ("done", "headers", "status")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.status = 0
        self.done = False


async def _cut_short(send: Send, progress: _Progress) -> None:
    """End a response the drain deadline interrupted: a 503 if nothing was sent yet, an error
    event if a stream was under way (the client knows to retry), otherwise just its end."""
    exc = Overloaded("The gateway shut down before this response finished; retry on another replica.", retry_after=1.0)
    if progress.done:
        return
    with contextlib.suppress(Exception):  # the client may be gone as well
        if progress.headers is None:
            await send_error(send, exc)
        elif any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in progress.headers):
            await send({"type": "http.response.body", "body": error_event(exc), "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_api_error(send: Send, route: ApiRoute, exc: SwitchyardError) -> None:
    """An error response in the shape of the API the route serves."""
    status, headers, body = route.serving.dialect.render_error(exc)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Edge:
    def __init__(self, app: ASGIApp, drain: DrainState, max_body_bytes: int):
        self.app = app  # FastAPI: the rest of the surface, and the lifespan that builds the services
        self.drain = drain
        self.max_body_bytes = max_body_bytes
        self.services: Services | None = None  # set by the lifespan once the services exist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        added = [(b"x-request-id", request_id)]
        progress = _Progress()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
                progress.headers = message["headers"]
                progress.status = message["status"]
            elif not message.get("more_body", False):
                progress.done = True
            await send(message)

        path = scope["path"]
        if self.drain.draining and path.startswith("/v1/"):
            await send_error(
                send_with_id, Overloaded("The gateway is shutting down; retry on another replica.", retry_after=5.0)
            )
            return
        route = route_for(scope["method"], path)
        if route is None and (allowed := allowed_methods(path)):
            await send_error(send_with_id, MethodNotAllowed(scope["method"], path, allowed))
            return
        telemetry = self.services.telemetry if self.services is not None else None
        trace = telemetry.start(scope["headers"]) if telemetry is not None and route is not None else None
        token = None
        if trace is not None:
            token = CURRENT_TRACE.set(trace)  # the pipeline's context picks it up
            added.append((b"traceresponse", trace.traceresponse()))
        self.drain.enter()
        try:
            if route is None:
                await self.app(scope, self._limited(scope, receive), send_with_id)
            else:
                await self._serve(route, scope, receive, send_with_id, trace)
        except asyncio.CancelledError:
            if not self.drain.aborting:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await _cut_short(send_with_id, progress)
        finally:
            self.drain.leave()
            if token is not None and trace is not None and telemetry is not None and route is not None:
                CURRENT_TRACE.reset(token)
                status = progress.status or 499  # no response started: the client went away first
                telemetry.submit(trace, request_id.decode(), route.endpoint, scope["method"], path, status)

    async def _serve(
        self, route: ApiRoute, scope: Scope, receive: Receive, send: Send, trace: RequestTrace | None
    ) -> None:
        try:
            if self.services is None:
                raise Overloaded("The gateway is still starting; retry shortly.", retry_after=1.0)
            body = await read_body(scope, receive, self.max_body_bytes)
            serving = self.services.servings[route.endpoint]
            response = await serving.handle(body, scope["state"]["request_id"], Headers(scope=scope))
        except SwitchyardError as exc:
            metrics.labelled(metrics.REQUESTS, route.endpoint, "unknown", "none", str(exc.status)).inc()
            if trace is not None:
                trace.error = exc
            await _send_api_error(send, route, exc)
            return
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            internal = SwitchyardError("The gateway hit an internal error; it has been logged.")
            if trace is not None:
                trace.error = internal
            await _send_api_error(send, route, internal)
            return
        await response(scope, receive, send)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        if scope["method"] in ("GET", "HEAD"):
            return receive
        limit, seen = self.max_body_bytes, 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        return counting_receive
