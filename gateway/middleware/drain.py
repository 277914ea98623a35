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
        self.aborting = False  # the drain deadline passed: what still runs is being cut short
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[object]] = set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)

    def leave(self) -> None:
        self.in_flight -= 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
        if self.in_flight == 0:
            self._idle.set()

    def abort(self) -> int:
        """Past the drain deadline: cancel every request still running, so that each can end with
        a clear error (the edge sends it) instead of a connection cut mid-response. Returns how many."""
        self.aborting = True
        for task in self._tasks:
            task.cancel("the drain deadline passed")
        return len(self._tasks)

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
