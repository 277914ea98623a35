"""Per-backend circuit breaker: closed → open after consecutive failures → half-open probe after a cooldown."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._probe_in_flight = False

    def ready_at(self) -> float:
        """When a request may next be tried (now, unless open and cooling down)."""
        if self.state is CircuitState.OPEN:
            return self.opened_at + self.cooldown
        return self._clock()

    def available(self) -> bool:
        """Whether `acquire` would let a request through now (no state change)."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self._clock() >= self.opened_at + self.cooldown
        return not self._probe_in_flight

    def acquire(self) -> bool:
        """Take permission to send one request; in half-open state only one probe at a time."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if self._clock() < self.opened_at + self.cooldown:
                return False
            self.state = CircuitState.HALF_OPEN
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        self._probe_in_flight = False
        if self.state is CircuitState.HALF_OPEN or self.consecutive_failures >= self.threshold:
            self.trip()

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled by the client): let another one try."""
        self._probe_in_flight = False

    def trip(self) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = self._clock()

    def allow_probe_now(self) -> None:
        """An active health check succeeded: skip the rest of the cooldown."""
        if self.state is CircuitState.OPEN:
            self.state = CircuitState.HALF_OPEN
            self._probe_in_flight = False
