from __future__ import annotations

from gateway.backends.circuit import CircuitBreaker, CircuitState


def state(cb: CircuitBreaker) -> CircuitState:
    """Read afresh each time (mypy would otherwise keep the narrowing of an earlier assert)."""
    return cb.state


def test_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    now = [0.0]
    cb = CircuitBreaker(failures=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(2):
        assert cb.acquire()
        cb.record_failure()
    assert state(cb) is CircuitState.CLOSED
    cb.record_success()  # a success resets the count
    for _ in range(3):
        cb.record_failure()
    assert state(cb) is CircuitState.OPEN and not cb.acquire()
    assert cb.ready_at() == 10.0
    now[0] = 10.0
    assert cb.acquire()  # the one half-open probe
    assert state(cb) is CircuitState.HALF_OPEN
    assert not cb.acquire()  # nobody else while it is out
    cb.record_failure()
    assert state(cb) is CircuitState.OPEN and cb.ready_at() == 20.0
    now[0] = 20.0
    assert cb.acquire()
    cb.record_success()
    assert state(cb) is CircuitState.CLOSED and cb.acquire()


def test_cancelled_probe_lets_another_try() -> None:
    now = [0.0]
    cb = CircuitBreaker(failures=1, cooldown=1.0, clock=lambda: now[0])
    cb.record_failure()
    now[0] = 1.0
    assert cb.acquire()
    cb.release_probe()
    assert cb.acquire()


def test_health_check_skips_the_rest_of_the_cooldown() -> None:
    cb = CircuitBreaker(failures=1, cooldown=60.0, clock=lambda: 0.0)
    cb.record_failure()
    assert not cb.available()
    cb.allow_probe_now()
    assert cb.available() and cb.acquire()
