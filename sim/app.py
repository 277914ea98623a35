"""The simulator as a raw ASGI application: routing, the admin endpoints, and error rendering.

No framework on purpose: the gateway's overhead benchmark pushes thousands of requests per second
through this, and every microsecond the sim spends is charged to the thing being measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError

from sim import messages, serving, wire
from sim.config import SimConfig, merge_config
from sim.exchange import Exchange, Receive, Scope, Send
from sim.state import SimState

__all__ = ["CONFIG_ENV", "SimApp", "app_from_env"]

CONFIG_ENV = "SWITCHYARD_SIM_CONFIG"  # how `--workers N` hands the configuration to each worker

Handler = Callable[[SimState, Exchange, dict[str, Any]], Awaitable[None]]

# path → (the API it belongs to, its handler); `SimConfig.apis` says which APIs are served
_GENERATE: dict[str, tuple[str, Handler]] = {
    "/v1/chat/completions": ("chat", serving.chat_completions),
    "/v1/completions": ("completions", serving.completions),
    "/v1/embeddings": ("embeddings", serving.embeddings),
    "/v1/messages": ("messages", messages.messages),
    "/v1/messages/count_tokens": ("messages", messages.count_tokens),
}


class _DropIntentionalAborts(logging.Filter):
    """The disconnect fault ends responses unfinished on purpose; that is not worth an error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without completing response")


class SimApp:
    def __init__(self, config: SimConfig | None = None):
        self.state = SimState(config or SimConfig())
        self._ids = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                logging.getLogger("uvicorn.error").addFilter(_DropIntentionalAborts())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _request_id(self, scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                return bytes(value)
        self._ids += 1
        return b"sim-%d-%d" % (os.getpid(), self._ids)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send, self._request_id(scope))
        method, path = scope["method"], scope["path"]
        route = _GENERATE.get(path)
        if route is not None and route[0] in self.state.config.apis:
            if method != "POST":
                await self._error(ex, serving.BadRequest(405, f"{method} not allowed on {path}"))
                return
            await self._generate(route[1], ex, path)
            return
        try:
            await self._admin(ex, method, path)
        except serving.BadRequest as exc:
            await self._error(ex, exc)

    async def _generate(self, handler: Handler, ex: Exchange, path: str) -> None:
        state = self.state
        stats = state.stats
        stats.in_flight += 1
        try:
            raw = await ex.read_body()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stats.received("POST", path, list(ex.scope["headers"]), None)
                raise serving.BadRequest(400, "the request body is not valid JSON") from None
            stats.received("POST", path, list(ex.scope["headers"]), body)
            if not isinstance(body, dict):
                raise serving.BadRequest(400, "the request body must be a JSON object")
            slots = state.slots
            if slots is None:
                await handler(state, ex, body)
            else:
                # A saturated server: requests over capacity wait, and the wait counts toward their TTFT.
                async with slots:
                    ex.t0 = time.perf_counter()
                    await handler(state, ex, body)
        except serving.BadRequest as exc:
            await self._error(ex, exc)
        except asyncio.CancelledError:
            if not ex.gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            phase = "streaming" if ex.chunks_sent else "before_first_token"
            state.stats.cancel(ex.request_id.decode("latin-1"), path, phase, ex.chunks_sent)
        finally:
            ex.close()
            state.stats.in_flight -= 1
            if ex.completed:
                state.stats.completed += 1

    async def _error(self, ex: Exchange, exc: serving.BadRequest) -> None:
        if ex.scope["path"].startswith("/v1/messages"):
            await ex.respond(exc.status, messages.error_body(exc.status, exc.message))
            return
        await ex.respond(exc.status, wire.error_body(exc.message, "invalid_request_error", exc.code, exc.param))

    async def _admin(self, ex: Exchange, method: str, path: str) -> None:
        state = self.state
        if method == "GET":
            if path in ("/healthz", "/health"):  # /health is what vLLM-oriented clients probe
                await ex.respond(200, b'{"status":"ok"}')
            elif path == "/v1/models":
                created = int(time.time())
                models = [
                    {"id": m, "object": "model", "created": created, "owned_by": "switchyard-sim"}
                    for m in state.config.models
                ]
                await ex.respond(200, orjson.dumps({"object": "list", "data": models}))
            elif path == "/sim/stats":
                await ex.respond(200, json.dumps(state.stats.snapshot(), default=str).encode())
            elif path == "/sim/config":
                await ex.respond(200, state.config.model_dump_json().encode())
            else:
                raise serving.BadRequest(404, f"no route {method} {path}")
            return
        if method == "POST" and path == "/sim/reset":
            await ex.read_body()
            state.reset()
            await ex.respond(200, b'{"status":"reset"}')
        elif method == "POST" and path == "/sim/config":
            try:
                patch = orjson.loads(await ex.read_body() or b"{}")
                if not isinstance(patch, dict):
                    raise serving.BadRequest(400, "the configuration patch must be a JSON object")
                state.reconfigure(merge_config(state.config, patch))
            except orjson.JSONDecodeError:
                raise serving.BadRequest(400, "the request body is not valid JSON") from None
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise serving.BadRequest(400, f"{where}: {first['msg']}", where) from None
            await ex.respond(200, state.config.model_dump_json().encode())
        else:
            raise serving.BadRequest(404, f"no route {method} {path}")


def app_from_env() -> SimApp:
    """uvicorn factory for worker processes: the configuration arrives as JSON in `CONFIG_ENV`."""
    raw = os.environ.get(CONFIG_ENV)
    return SimApp(SimConfig.model_validate_json(raw) if raw else None)
