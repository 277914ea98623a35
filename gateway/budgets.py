"""Spend counters and budgets in money, shared by every replica through Redis.

The same reserve-and-settle as the token limits (gateway/limits.py): admission reserves a
request's worst-case cost on every counter that applies (its key's, its team's and its tenant's,
each for the current day and month) in one Lua script, refusing it when the cost would take any
budgeted counter past its amount; when the request ends the hold is released and the real cost is
added. Concurrent requests therefore overshoot a budget by at most what one request's real cost
exceeds its reservation, which is nothing while the reservation is a true worst case.

A counter is a hash `spend:<scope>:<period id>` with `spent` (settled) and `held` (reserved, not
yet settled); it expires a day after its period ends, which is how budgets reset.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import metrics

__all__ = [
    "PERIODS",
    "Counter",
    "CountersUnavailable",
    "MemorySpendCounters",
    "RedisSpendCounters",
    "Refusal",
    "SpendCounters",
    "counters_for",
    "period_window",
]

log = logging.getLogger(__name__)

PERIODS = ("daily", "monthly")
_KEEP_AFTER_RESET = 86_400  # seconds a finished period's counter stays readable (and settleable)


def period_window(period: str, now: float) -> tuple[str, float]:
    """(id, reset time) of the period that contains `now` (unix seconds, UTC)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "daily":
        reset = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return f"d{day:%Y%m%d}", reset.timestamp()
    if period == "monthly":
        first_next = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        return f"m{day:%Y%m}", dt.datetime.combine(first_next, dt.time(), dt.UTC).timestamp()
    raise ValueError(f"unknown budget period {period!r}")


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter a request touches; `limit` is set when a budget caps it."""

    scope: str  # "key:<id>", "team:<tenant>:<team>" or "tenant:<tenant>"
    level: str  # key, team or tenant
    period: str
    period_id: str
    reset_at: float
    limit: float | None = None

    @property
    def name(self) -> str:
        return f"spend:{self.scope}:{self.period_id}"


def counters_for(scopes: Sequence[tuple[str, str]], budgets: dict[tuple[str, str], float], now: float) -> list[Counter]:
    """The counters of `scopes` ((level, scope) pairs) for the current periods, with `budgets`
    ((scope, period) → amount) as their limits."""
    windows = {p: period_window(p, now) for p in PERIODS}
    return [
        Counter(scope, level, p, windows[p][0], windows[p][1], budgets.get((scope, p)))
        for level, scope in scopes
        for p in PERIODS
    ]


class CountersUnavailable(Exception):
    """The shared counters could not be reached: the caller decides whether to let the request go."""


@dataclass(frozen=True, slots=True)
class Refusal:
    counter: Counter
    used: float  # spent + held on that counter when the request was refused


class SpendCounters(Protocol):
    async def reserve(self, counters: Sequence[Counter], cost: float) -> Refusal | None: ...

    async def settle(self, counters: Sequence[Counter], reserved: float, actual: float) -> None: ...

    async def read(self, counters: Sequence[Counter]) -> list[tuple[float, float]]:
        """(spent, held) of each counter."""
        ...


def _first_refusal(counters: Sequence[Counter], used: Sequence[float], cost: float) -> Refusal | None:
    for counter, u in zip(counters, used, strict=True):
        if counter.limit is not None and u + cost > counter.limit:
            return Refusal(counter, u)
    return None


class MemorySpendCounters:
    """One process's counters (no Redis): the same arithmetic as the script below."""

    def __init__(self, clock: Any = time.time):
        self._clock = clock
        self._state: dict[str, list[float]] = {}  # name → [spent, held, expires at]

    def _get(self, counter: Counter) -> list[float]:
        state = self._state.get(counter.name)
        if state is None or state[2] <= self._clock():
            state = self._state[counter.name] = [0.0, 0.0, counter.reset_at + _KEEP_AFTER_RESET]
        return state

    async def reserve(self, counters: Sequence[Counter], cost: float) -> Refusal | None:
        states = [self._get(c) for c in counters]
        refusal = _first_refusal(counters, [s[0] + s[1] for s in states], cost)
        if refusal is None:
            for s in states:
                s[1] += cost
        return refusal

    async def settle(self, counters: Sequence[Counter], reserved: float, actual: float) -> None:
        for c in counters:
            s = self._get(c)
            s[0] += actual
            s[1] = max(0.0, s[1] - reserved)

    async def read(self, counters: Sequence[Counter]) -> list[tuple[float, float]]:
        return [(s[0], s[1]) for s in (self._get(c) for c in counters)]


# KEYS: counters. ARGV: cost, then each counter's limit (-1: none), then each one's expiry time.
_RESERVE = """
local cost = tonumber(ARGV[1])
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[1 + i])
  if limit >= 0 then
    local s = redis.call('HMGET', KEYS[i], 'spent', 'held')
    local used = (tonumber(s[1]) or 0) + (tonumber(s[2]) or 0)
    if used + cost > limit then return {i, tostring(used)} end
  end
end
if cost > 0 then
  for i = 1, n do
    redis.call('HINCRBYFLOAT', KEYS[i], 'held', ARGV[1])
    redis.call('EXPIREAT', KEYS[i], ARGV[1 + n + i])
  end
end
return {0, '0'}
"""

# KEYS: counters. ARGV: for each counter, the holds to release, the real cost to add, its expiry time.
_SETTLE = """
for i = 1, #KEYS do
  local release, actual = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  if release ~= 0 then
    local held = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'held', -release))
    if held < 0 then redis.call('HSET', KEYS[i], 'held', '0') end
  end
  if actual ~= 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'spent', actual) end
  redis.call('EXPIREAT', KEYS[i], ARGV[3 * i])
end
return 1
"""


class RedisSpendCounters:
    """Counters every replica shares. When Redis is unreachable a reservation raises
    `CountersUnavailable` (counted); a settlement is logged and lost.

    Settlements are group-committed: those that end while one script call is on its way are summed
    per counter and sent together when it returns, so under load a replica pays one round trip for
    many requests' settlements, and alone it pays one each, with no timer in between."""

    def __init__(self, redis: Any, prefix: str = "switchyard:"):
        self._redis = redis
        self._prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._due: dict[str, list[float]] = {}  # key → [holds to release, cost to add, expiry]
        self._waiting: list[asyncio.Future[None]] = []  # the settlements `_due` holds
        self._sending: asyncio.Task[None] | None = None

    def _keys(self, counters: Sequence[Counter]) -> list[str]:
        return [self._prefix + c.name for c in counters]

    @staticmethod
    def _expiries(counters: Sequence[Counter]) -> list[int]:
        return [int(c.reset_at) + _KEEP_AFTER_RESET for c in counters]

    async def reserve(self, counters: Sequence[Counter], cost: float) -> Refusal | None:
        limits = [-1.0 if c.limit is None else c.limit for c in counters]
        try:
            index, used = await self._reserve(
                keys=self._keys(counters), args=[repr(cost), *map(repr, limits), *self._expiries(counters)]
            )
        except Exception as exc:
            metrics.STORE_ERRORS.labels("spend").inc()
            raise CountersUnavailable(type(exc).__name__) from exc
        index = int(index)
        return None if index == 0 else Refusal(counters[index - 1], float(used))

    async def settle(self, counters: Sequence[Counter], reserved: float, actual: float) -> None:
        """Returns once the settlement is in Redis (or was lost and logged)."""
        if not counters or (not reserved and not actual):
            return
        for key, expiry in zip(self._keys(counters), self._expiries(counters), strict=True):
            due = self._due.setdefault(key, [0.0, 0.0, 0])
            due[0] += reserved
            due[1] += actual
            due[2] = max(due[2], expiry)
        landed = asyncio.get_running_loop().create_future()
        self._waiting.append(landed)
        if self._sending is None:
            self._sending = asyncio.ensure_future(self._send_due())
        await landed  # a caller cancelled here leaves its settlement queued: it lands all the same

    async def _send_due(self) -> None:
        try:
            while self._due:
                due, waiting = self._due, self._waiting
                self._due, self._waiting = {}, []
                args: list[str | int] = []
                for release, actual, expiry in due.values():
                    args += [repr(release), repr(actual), int(expiry)]
                try:
                    await self._settle(keys=list(due), args=args)
                except Exception as exc:
                    metrics.STORE_ERRORS.labels("spend").inc()
                    log.warning("could not settle spend for %d requests: %s", len(waiting), type(exc).__name__)
                for landed in waiting:
                    if not landed.done():
                        landed.set_result(None)
        finally:
            self._sending = None

    async def read(self, counters: Sequence[Counter]) -> list[tuple[float, float]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._keys(counters):
                pipe.hmget(key, "spent", "held")
            rows = await pipe.execute()
        return [(float(s or 0), float(h or 0)) for s, h in rows]
