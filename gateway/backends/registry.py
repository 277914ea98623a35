"""Model → backends, fallback chains, and waiting for a usable backend within a budget."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet

from gateway import metrics
from gateway.backends.backend import Backend, Lease
from gateway.backends.engine_metrics import fresh
from gateway.errors import NoBackendAvailable, Overloaded, UnknownModel

__all__ = ["BackendRegistry"]


class BackendRegistry:
    def __init__(
        self,
        backends: Iterable[Backend],
        *,
        fallbacks: dict[str, list[str]] | None = None,
        policy: str = "ttft",
        wait_budget: float = 2.0,
        max_waiters: int = 1024,
        load_factor: float = 1.25,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backends = list(backends)  # discovery adds and removes replicas in place
        self.fallbacks = fallbacks or {}
        self.policy = policy
        self.load_factor = load_factor
        self._clock = clock
        self._turn = 0  # round robin
        self.wait_budget = wait_budget
        self.max_waiters = max_waiters
        self._rng = rng or random.Random()
        self._slot_freed = asyncio.Event()
        self._waiters = 0
        for b in self.backends:
            b.publish_circuit()

    def add(self, backend: Backend) -> None:
        """A discovered replica joins (already gated by its health check)."""
        self.backends.append(backend)
        backend.publish_circuit()

    def remove(self, backend: Backend) -> None:
        """A drained replica leaves; leases still held on it release into the object, harmlessly."""
        if backend in self.backends:
            self.backends.remove(backend)

    # -- what is served ---------------------------------------------------------------------

    def models(self) -> list[str]:
        names: set[str] = set()
        for b in self.backends:
            names |= b.models
        return sorted(names)

    def candidates(self, model: str) -> list[Backend]:
        return [b for b in self.backends if model in b.models]

    def chain(self, model: str) -> list[str]:
        """The model asked for, then its fallbacks, in order, without repeats."""
        seen: list[str] = []
        for m in (model, *self.fallbacks.get(model, ())):
            if m not in seen:
                seen.append(m)
        return seen

    def check_model(self, model: str) -> None:
        if not any(self.candidates(m) for m in self.chain(model)):
            raise UnknownModel(model, self.models())

    @property
    def all_known(self) -> bool:
        return all(b.checked or bool(b.settings.models) for b in self.backends)

    # -- choice -----------------------------------------------------------------------------

    def load(self, backend: Backend) -> float:
        """Requests the backend holds: ours in flight, or what its engine reports (every gateway's
        together) when that is more."""
        stats = fresh(backend, self._clock())
        return max(float(backend.outstanding), stats.load) if stats is not None else float(backend.outstanding)

    def saturated(self, backend: Backend) -> bool:
        """The engine says its KV cache or queue is full: a new request would wait, whatever the
        TTFT seen so far says."""
        stats = fresh(backend, self._clock())
        return stats is not None and (
            stats.kv_usage >= backend.settings.kv_saturation or stats.waiting >= backend.settings.queue_saturation
        )

    def score(self, backend: Backend) -> float:
        """Lower is better. `ttft` and `prefix`: predicted time to first token; else least
        outstanding, weighted."""
        load = self.load(backend)
        if self.policy in ("ttft", "prefix"):
            if backend.ttft.stale and load == 0:
                return -1.0  # no recent data: probe it so its prediction stays fresh
            predicted = backend.ttft.predict(math.ceil(load))
            if predicted is not None:
                return predicted / backend.weight
        return (load + 1) / backend.weight

    def rank(self, model: str, exclude: AbstractSet[str] = frozenset()) -> list[Backend]:
        usable = [b for b in self.candidates(model) if b.name not in exclude and b.usable()]
        if self.policy == "round_robin":
            usable.sort(key=lambda b: b.name)
            turn = self._turn % len(usable) if usable else 0
            return usable[turn:] + usable[:turn]
        self._rng.shuffle(usable)  # equal scores: spread the load
        return sorted(usable, key=lambda b: (self.saturated(b), self.score(b)))

    def _with_affinity(self, model: str, ranked: list[Backend], owner: str | None) -> list[Backend]:
        """Prefix policy: the replica holding the prefix first, unless it is saturated or loaded past
        `load_factor` × the mean (bounded load); then the rest by predicted TTFT."""
        held = next((b for b in ranked if b.name == owner), None)
        if held is None:
            known = owner is not None and any(b.name == owner for b in self.candidates(model))
            metrics.labelled(metrics.BALANCER_DECISIONS, model, "spill" if known else "cold").inc()
            return ranked
        loads = [self.load(b) for b in ranked]
        bound = math.ceil(self.load_factor * (sum(loads) + 1) / len(ranked))
        if self.saturated(held) or self.load(held) + 1 > bound:
            metrics.labelled(metrics.BALANCER_DECISIONS, model, "spill").inc()
            return [b for b in ranked if b is not held] + [held]
        metrics.labelled(metrics.BALANCER_DECISIONS, model, "affinity").inc()
        return [held] + [b for b in ranked if b is not held]

    def try_acquire(
        self, model: str, exclude: AbstractSet[str] = frozenset(), affinity: str | None = None
    ) -> Lease | None:
        """A lease on the best usable backend now, or None. `affinity` (prefix policy, first attempt
        only): the replica that holds the prompt's prefix, or None for a cold prefix."""
        first = True
        for m in self.chain(model):
            ranked = self.rank(m, exclude)
            if self.policy == "prefix" and first and ranked:
                ranked = self._with_affinity(m, ranked, affinity)
                first = False
            for backend in ranked:
                if backend.circuit.acquire():
                    lease = Lease(backend, m, backend.upstream_model(m), backend.outstanding)
                    backend.outstanding += 1
                    if self.policy == "round_robin":
                        self._turn += 1
                    if m != model:
                        metrics.FALLBACKS.labels(model, m).inc()
                    return lease
        return None

    async def acquire(self, model: str, exclude: AbstractSet[str] = frozenset(), affinity: str | None = None) -> Lease:
        """A lease on the best usable backend for `model` or its fallbacks, waiting up to the budget
        for a cooling circuit or a free slot rather than failing at once."""
        lease = self.try_acquire(model, exclude, affinity)
        if lease is not None:
            return lease
        if not any(b.name not in exclude for m in self.chain(model) for b in self.candidates(m)):
            raise NoBackendAvailable(f"no other backend serves '{model}'", retry_after=1.0)
        if self._waiters >= self.max_waiters:
            metrics.SHED.labels("any", "queue_full").inc()
            raise Overloaded("too many requests are waiting for a backend", retry_after=1.0)
        deadline = time.monotonic() + self.wait_budget
        self._waiters += 1
        try:
            while True:
                remaining = deadline - time.monotonic()
                next_ready = self._next_ready(model, exclude)
                if remaining <= 0 or (next_ready is not None and next_ready - time.monotonic() > remaining):
                    retry = max(1.0, (next_ready or time.monotonic() + 1.0) - time.monotonic())
                    raise NoBackendAvailable(f"every backend for '{model}' is unavailable or busy", retry_after=retry)
                # Wake when a slot frees or when the earliest circuit cools down, whichever is first.
                wake_in = remaining if next_ready is None else max(0.0, next_ready - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), timeout=min(wake_in, remaining) + 0.001)
                lease = self.try_acquire(model, exclude)
                if lease is not None:
                    return lease
        finally:
            self._waiters -= 1

    def release(self, lease: Lease) -> None:
        lease.release()
        if self._waiters:
            self._slot_freed.set()
            self._slot_freed = asyncio.Event()

    def _next_ready(self, model: str, exclude: AbstractSet[str]) -> float | None:
        """Earliest moment a cooling circuit allows a probe (None if only capacity is missing)."""
        times = [
            b.circuit.ready_at()
            for m in self.chain(model)
            for b in self.candidates(m)
            if b.name not in exclude and b.healthy and not b.circuit.available()
        ]
        return min(times) if times else None
