"""Graceful drain: after SIGTERM new API requests get 503 + Retry-After while in-flight ones finish."""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import Overloaded

__all__ = ["DrainMiddleware", "DrainState"]


class DrainState:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every in-flight request finished within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DrainMiddleware:
    def __init__(self, app: ASGIApp, state: DrainState, retry_after: float = 5.0):
        self.app = app
        self.state = state
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.state.draining:
            exc = Overloaded("The gateway is shutting down; retry on another replica.", retry_after=self.retry_after)
            headers = [(b"content-type", b"application/json")]
            headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": orjson.dumps(exc.to_dict())})
            return
        self.state.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.leave()
