"""Active health checks: ask each remote backend for its models every few seconds.

A failed check takes the backend out of rotation; a passing one brings it back and, when its
circuit is cooling down, lets a probe through without waiting out the rest of the cooldown.
Backends configured without a model list learn theirs here (`serve --upstream URL`).
"""

from __future__ import annotations

import asyncio
import logging

from gateway import metrics
from gateway.backends.backend import Backend
from gateway.errors import UpstreamError

__all__ = ["HealthChecker"]

log = logging.getLogger(__name__)

_RECHECK_UNHEALTHY = 1.0  # seconds


class HealthChecker:
    def __init__(self, backends: list[Backend], interval: float):
        self._backends = backends
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def check(self, backend: Backend) -> bool:
        try:
            served = await asyncio.wait_for(backend.transport.list_models(), timeout=self._interval)
        except (UpstreamError, TimeoutError) as exc:
            if backend.healthy:
                log.warning("backend %s failed its health check: %s", backend.name, exc)
            backend.healthy = False
            metrics.BACKEND_UP.labels(backend.name).set(0)
            return False
        if not backend.settings.models:
            backend.models = set(served) | set(backend.settings.aliases)
        if not backend.healthy:
            log.info("backend %s is healthy again", backend.name)
        backend.healthy = True
        backend.checked = True
        backend.circuit.allow_probe_now()
        backend.publish_circuit()
        metrics.BACKEND_UP.labels(backend.name).set(1)
        return True

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(b) for b in self._backends))

    def start(self) -> None:
        if self._backends and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="health-checks")

    async def _loop(self) -> None:
        # Healthy backends are checked every interval; unhealthy ones every second, so one that was
        # still starting when the gateway did is back in rotation promptly.
        elapsed = 0.0
        while True:
            step = min(self._interval, _RECHECK_UNHEALTHY)
            await asyncio.sleep(step)  # the check period itself, not a synchronisation
            elapsed += step
            if elapsed >= self._interval:
                elapsed = 0.0
                await self.check_all()
            else:
                await asyncio.gather(*(self.check(b) for b in self._backends if not b.healthy))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
