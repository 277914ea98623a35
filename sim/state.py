"""The simulator's mutable state, shared by every request of one process: config, RNG, stats, ids."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid

from sim.config import SimConfig
from sim.stats import SimStats

__all__ = ["SimState"]


class SimState:
    def __init__(self, config: SimConfig):
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = SimStats(config.recent_requests)
        self.slots = _slots(config)

    def reconfigure(self, config: SimConfig) -> None:
        """Swap the configuration; the RNG restarts from the (possibly new) seed."""
        if config.max_concurrency != self.config.max_concurrency:
            self.slots = _slots(config)
        self.config = config
        self.rng = random.Random(config.seed)
        if config.recent_requests != self.stats.recent.maxlen:
            self.stats = SimStats(config.recent_requests)

    def reset(self) -> None:
        """Forget everything seen so far and restart the RNG, keeping the configuration."""
        self.rng = random.Random(self.config.seed)
        in_flight = self.stats.in_flight
        self.stats = SimStats(self.config.recent_requests)
        self.stats.in_flight = in_flight

    def next_id(self, kind: str) -> str:
        return f"{kind}-{self._prefix}{next(self._ids):x}"


def _slots(config: SimConfig) -> asyncio.Semaphore | None:
    return asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
