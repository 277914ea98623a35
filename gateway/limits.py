"""Per-tenant request and token limits: token buckets that refill continuously.

A request takes one request token and reserves its estimated tokens (prompt estimate plus
`max_tokens` or a default) before it runs; when it finishes the reservation is settled against the
real usage. Reserving up front is what keeps concurrent requests from overshooting a limit: at most
one request's estimate can be in error. With Redis the check-and-take is one Lua script, atomic
across gateway replicas, on the server's clock; without Redis the same arithmetic runs in memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import metrics

__all__ = ["LimitDecision", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter", "bucket_step"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    retry_after: float
    remaining_requests: float | None
    remaining_tokens: float | None

    def headers(self, rpm: int | None, tpm: int | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if rpm:
            out["x-ratelimit-limit-requests"] = str(rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, int(self.remaining_requests or 0)))
        if tpm:
            out["x-ratelimit-limit-tokens"] = str(tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, int(self.remaining_tokens or 0)))
        if not self.allowed:
            out["x-ratelimit-reset-requests"] = f"{self.retry_after:.3f}s"
        return out


class RateLimiter(Protocol):
    async def reserve(self, tenant: str, rpm: int | None, tpm: int | None, tokens: int) -> LimitDecision: ...

    async def settle(self, tenant: str, tpm: int | None, delta_tokens: int) -> None:
        """Correct the token bucket once the real usage is known (negative delta: refund)."""
        ...


def bucket_step(
    state: tuple[float, float, float] | None, now: float, rpm: int, tpm: int, cost: int
) -> tuple[bool, float, tuple[float, float, float]]:
    """Pure bucket arithmetic (mirrors the Lua script). `rpm`/`tpm` of 0 mean unlimited.

    Returns (allowed, retry_after, new_state) with state = (request tokens, tokens, timestamp).
    A request costing more than the whole token budget passes when the bucket is full and
    leaves it in debt, so it is slow rather than impossible.
    """
    r, t, ts = state if state is not None else (float(rpm), float(tpm), now)
    dt = max(0.0, now - ts)
    if rpm:
        r = min(float(rpm), r + dt * rpm / 60.0)
    if tpm:
        t = min(float(tpm), t + dt * tpm / 60.0)
    wait = 0.0
    if rpm and r < 1.0:
        wait = max(wait, (1.0 - r) * 60.0 / rpm)
    need = min(cost, tpm)
    if tpm and t < need:
        wait = max(wait, (need - t) * 60.0 / tpm)
    if wait > 0:
        return False, wait, (r, t, now)
    if rpm:
        r -= 1.0
    if tpm:
        t -= cost
    return True, 0.0, (r, t, now)


class MemoryRateLimiter:
    def __init__(self, clock: Any = time.monotonic):
        self._clock = clock
        self._state: dict[str, tuple[float, float, float]] = {}

    async def reserve(self, tenant: str, rpm: int | None, tpm: int | None, tokens: int) -> LimitDecision:
        allowed, wait, state = bucket_step(self._state.get(tenant), self._clock(), rpm or 0, tpm or 0, tokens)
        self._state[tenant] = state
        return LimitDecision(allowed, wait, state[0] if rpm else None, state[1] if tpm else None)

    async def settle(self, tenant: str, tpm: int | None, delta_tokens: int) -> None:
        state = self._state.get(tenant)
        if not tpm or state is None or not delta_tokens:
            return
        r, t, ts = state
        self._state[tenant] = (r, min(float(tpm), t - delta_tokens), ts)


_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(s[1]) or rpm
local tk = tonumber(s[2]) or tpm
local ts = tonumber(s[3]) or now
local dt = math.max(0, now - ts)
if rpm > 0 then r = math.min(rpm, r + dt * rpm / 60) end
if tpm > 0 then tk = math.min(tpm, tk + dt * tpm / 60) end
local wait = 0
if rpm > 0 and r < 1 then wait = math.max(wait, (1 - r) * 60 / rpm) end
local need = math.min(cost, tpm)
if tpm > 0 and tk < need then wait = math.max(wait, (need - tk) * 60 / tpm) end
local ok = 0
if wait == 0 then
  ok = 1
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then tk = tk - cost end
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return {ok, tostring(wait), tostring(r), tostring(tk)}
"""

_SETTLE = """
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 't'))
if cur == nil then return 0 end
redis.call('HSET', KEYS[1], 't', tostring(math.min(tpm, cur - delta)))
return 1
"""


class RedisRateLimiter:
    """Buckets shared by every replica. If Redis is unreachable the limiter fails open (counted)."""

    def __init__(self, redis: Any, prefix: str = "switchyard:"):
        self._redis = redis
        self._prefix = prefix + "ratelimit:"
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    async def reserve(self, tenant: str, rpm: int | None, tpm: int | None, tokens: int) -> LimitDecision:
        try:
            ok, wait, r, t = await self._reserve(keys=[self._prefix + tenant], args=[rpm or 0, tpm or 0, tokens])
        except Exception as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", type(exc).__name__)
            metrics.STORE_ERRORS.labels("ratelimit").inc()
            return LimitDecision(True, 0.0, None, None)
        return LimitDecision(bool(int(ok)), float(wait), float(r) if rpm else None, float(t) if tpm else None)

    async def settle(self, tenant: str, tpm: int | None, delta_tokens: int) -> None:
        if not tpm or not delta_tokens:
            return
        try:
            await self._settle(keys=[self._prefix + tenant], args=[tpm, delta_tokens])
        except Exception as exc:
            metrics.STORE_ERRORS.labels("ratelimit").inc()
            log.warning("could not settle token usage: %s", type(exc).__name__)
