from __future__ import annotations

import pytest

from gateway.limits import LimitDecision, MemoryRateLimiter, bucket_step


@pytest.mark.parametrize(
    ("state", "now", "rpm", "tpm", "cost", "allowed", "wait"),
    [
        (None, 0.0, 60, 0, 0, True, 0.0),  # fresh bucket
        ((0.0, 0.0, 0.0), 0.5, 60, 0, 0, False, 0.5),  # empty: half a second to the next request
        ((0.0, 0.0, 0.0), 1.0, 60, 0, 0, True, 0.0),  # refilled after one second at 1/s
        ((10.0, 100.0, 0.0), 0.0, 10, 100, 150, True, 0.0),  # larger than the budget: passes when full
        ((10.0, 50.0, 0.0), 0.0, 10, 100, 60, False, 6.0),  # 10 tokens short at 100/min → 6 s
        ((10.0, 50.0, 0.0), 0.0, 0, 0, 10_000, True, 0.0),  # unlimited
    ],
)
def test_bucket_step(
    state: tuple[float, float, float] | None, now: float, rpm: int, tpm: int, cost: int, allowed: bool, wait: float
) -> None:
    ok, retry, _ = bucket_step(state, now, rpm, tpm, cost)
    assert ok is allowed
    assert retry == pytest.approx(wait)


async def test_memory_limiter_counts_and_settles() -> None:
    clock = [0.0]
    limiter = MemoryRateLimiter(clock=lambda: clock[0])
    decisions = [await limiter.reserve("t", 3, None, 0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after == pytest.approx(20.0)
    first = await limiter.reserve("tok", None, 100, 80)
    assert first.allowed and first.remaining_tokens == pytest.approx(20)
    assert not (await limiter.reserve("tok", None, 100, 80)).allowed
    await limiter.settle("tok", 100, -70)  # the first request used 10 of its 80
    assert (await limiter.reserve("tok", None, 100, 80)).allowed


def test_headers_name_the_limits() -> None:
    headers = LimitDecision(False, 1.5, 0.0, 12.0).headers(10, 1000)
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-tokens"] == "12"
    assert headers["x-ratelimit-reset-requests"] == "1.500s"
