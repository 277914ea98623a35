"""Steady client traffic in the background while a fault is injected, every outcome kept."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.soak.workload import TOPICS
from tests.faults.oracle import Seen, observe

__all__ = ["Sent", "Traffic", "tools"]


def tools(n: int, prefix: str = "tool") -> list[dict[str, Any]]:
    """`n` distinct function tools (more than the router's threshold makes it narrow)."""
    topics = TOPICS[:16]
    out = []
    for i in range(n):
        topic = topics[i % len(topics)]
        out.append(
            {
                "type": "function",
                "function": {
                    "name": f"{prefix}_{topic}_{i}",
                    "description": f"Look up {topic} (variant {i}).",
                    "parameters": {
                        "type": "object",
                        "properties": {"query": {"type": "string"}},
                        "required": ["query"],
                    },
                },
            }
        )
    return out


@dataclass(frozen=True)
class Sent:
    at: float  # perf_counter when it was sent
    index: int  # which body
    seen: Seen


class Traffic:
    """`concurrency` clients cycling through `bodies` until the block ends.

    `pace` is the pause between one client's requests: load shape, not synchronisation.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        bodies: list[dict[str, Any]],
        *,
        headers: dict[str, str] | None = None,
        concurrency: int = 3,
        deadline: float = 10.0,
        pace: float = 0.02,
    ):
        self.client, self.url, self.bodies, self.headers = client, url, bodies, headers
        self.concurrency, self.deadline, self.pace = concurrency, deadline, pace
        self.sent: list[Sent] = []
        self._next = itertools.count()
        self._stop = asyncio.Event()
        self._answered = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    async def _worker(self) -> None:
        while not self._stop.is_set():
            i = next(self._next) % len(self.bodies)
            at = time.perf_counter()
            seen = await observe(self.client, self.url, self.bodies[i], deadline=self.deadline, headers=self.headers)
            self.sent.append(Sent(at, i, seen))
            self._answered.set()
            await asyncio.sleep(self.pace)

    async def __aenter__(self) -> Traffic:
        self._workers = [asyncio.ensure_future(self._worker()) for _ in range(self.concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)

    def between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.at < end]

    async def until(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more requests have been answered (bounded)."""
        target = len(self.sent) + count
        async with asyncio.timeout(timeout):
            while len(self.sent) < target:
                self._answered.clear()
                await self._answered.wait()
