"""Graceful drain state: after SIGTERM the edge (gateway/edge.py) refuses new API requests with 503
+ Retry-After while in-flight ones finish; the server (gateway/server.py) waits for them."""

from __future__ import annotations

import asyncio

__all__ = ["DrainState"]


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
