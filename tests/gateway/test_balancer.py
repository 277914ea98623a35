"""Backend choice: the TTFT balancer picks the lowest predicted first token and probes stale
backends; least-outstanding weighs requests in flight by each backend's weight."""

from __future__ import annotations

import random
from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.circuit import CircuitBreaker
from gateway.backends.registry import BackendRegistry
from gateway.backends.ttft import TTFTModel
from gateway.settings import BackendSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def backend(name: str, clock: Clock, **settings: Any) -> Backend:
    # Ranking never touches the transport.
    config = BackendSettings(name=name, base_url="http://127.0.0.1:1/v1", models=["m"], **settings)
    return Backend(config, transport=None, circuit=CircuitBreaker(5, 10.0), ttft=TTFTModel(clock=clock),  # type: ignore[arg-type]
                   models={"m"})


def names(registry: BackendRegistry) -> list[str]:
    return [b.name for b in registry.rank("m")]


def test_ttft_balancer_prefers_the_lowest_predicted_first_token() -> None:
    clock = Clock()
    fast, slow = backend("fast", clock), backend("slow", clock)
    for _ in range(20):
        fast.ttft.observe(0.05, 0)
        slow.ttft.observe(0.40, 0)
    registry = BackendRegistry([slow, fast], policy="ttft", rng=random.Random(0))
    assert names(registry) == ["fast", "slow"]


def test_ttft_balancer_counts_outstanding_work() -> None:
    clock = Clock()
    a, b = backend("a", clock), backend("b", clock)
    for outstanding in range(8):  # each request in flight adds 0.1 s to a's first token
        a.ttft.observe(0.05 + 0.1 * outstanding, outstanding)
        b.ttft.observe(0.30, outstanding)  # b's does not grow with load
    registry = BackendRegistry([a, b], policy="ttft", rng=random.Random(0))
    assert names(registry)[0] == "a"  # idle: a is faster
    a.outstanding = 4  # 0.45 s predicted against b's 0.30 s
    assert names(registry)[0] == "b"


def test_ttft_balancer_probes_a_backend_without_recent_data() -> None:
    clock = Clock()
    fresh, stale = backend("fresh", clock), backend("stale", clock)
    stale.ttft.observe(5.0, 0)  # slow, long ago
    clock.now = 60.0  # past the 30 s staleness window
    for _ in range(5):
        fresh.ttft.observe(0.05, 0)
    registry = BackendRegistry([fresh, stale], policy="ttft", rng=random.Random(0))
    assert names(registry)[0] == "stale"  # one request probes it so its prediction is current
    stale.outstanding = 1  # while the probe is out, traffic goes back to the known-fast backend
    assert names(registry)[0] == "fresh"


def test_least_outstanding_is_weighted() -> None:
    clock = Clock()
    big, small = backend("big", clock, weight=3.0), backend("small", clock)
    registry = BackendRegistry([big, small], policy="least_outstanding", rng=random.Random(0))
    chosen = []
    for _ in range(8):
        best = registry.rank("m")[0]
        best.outstanding += 1
        chosen.append(best.name)
    assert chosen.count("big") == 6 and chosen.count("small") == 2
