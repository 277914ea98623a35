"""Spend in money, in process over scripted upstreams (no Redis: the counters live in memory):
prices with cached tokens, a key's budget refusing the request that would pass it, the period
arithmetic, and the ledger's buffering."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.auth import hash_key
from gateway.budgets import Counter, MemorySpendCounters, period_window
from gateway.ledger import Ledger
from gateway.pricing import PriceTable
from gateway.settings import LedgerSettings, SpendSettings
from tests.support.in_process import in_process_gateway
from tests.support.scripted import ScriptedTransport, chunk, event

PRICES = {"m": {"input": 1000.0, "output": 2000.0, "cached_input": 100.0}}  # USD per million tokens


def answer(prompt: int, completion: int, cached: int | None = None) -> list[Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}  # fmt: skip
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    tail = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [], "usage": usage}
    return [chunk("", role="assistant"), chunk("ok"), chunk(finish="stop"), event(tail)]


def config(tenant: str, key: str, **key_fields: Any) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"sha256": hash_key(key), "tenant": tenant, **key_fields}]},
        "spend": {"enabled": True, "prices": PRICES},
    }


def spent(tenant: str, team: str = "") -> float:
    return REGISTRY.get_sample_value("switchyard_spend_usd_total", {"tenant": tenant, "team": team}) or 0.0


async def test_cached_prompt_tokens_are_charged_at_the_cached_price(tmp_path: Path) -> None:
    upstream = ScriptedTransport("a", [answer(100, 10, cached=80)])
    body = {"model": "m", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    async with in_process_gateway([upstream], tmp_path, config("t-cached", "sk-c", team="red")) as client:
        response = await client.post("/v1/chat/completions", headers={"authorization": "Bearer sk-c"}, json=body)
        assert response.status_code == 200
    # 20 uncached prompt tokens, 80 cached, 10 out: 0.02 + 0.008 + 0.02.
    assert spent("t-cached", "red") == pytest.approx(0.048)


async def test_a_request_that_would_pass_the_keys_budget_is_refused_until_the_reset(tmp_path: Path) -> None:
    upstream = ScriptedTransport("a", [answer(5, 10)])  # costs 0.025
    cfg = config("t-budget", "sk-b", budget={"amount_usd": 0.1, "period": "daily"})
    body = {"model": "m", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}
    # Worst case: 5 bytes + 4 = 9 prompt tokens and 10 out = 0.029. After three answers 0.075 is
    # spent, and 0.075 + 0.029 would pass 0.1: the fourth is refused, though it might have fit.
    async with in_process_gateway([upstream], tmp_path, cfg) as client:
        statuses = []
        for _ in range(4):
            response = await client.post("/v1/chat/completions", headers={"authorization": "Bearer sk-b"}, json=body)
            statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429]
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "rate_limit_error"
    assert "this key's daily budget" in error["message"]
    _, reset = period_window("daily", dt.datetime.now(dt.UTC).timestamp())
    wait = reset - dt.datetime.now(dt.UTC).timestamp()
    assert abs(int(response.headers["retry-after"]) - wait) <= 2
    assert spent("t-budget") == pytest.approx(0.075)
    assert len(upstream.played) == 3  # the refused request never went upstream


async def test_a_clients_next_request_is_not_refused_for_the_hold_of_its_last(tmp_path: Path) -> None:
    upstream = ScriptedTransport("a", [answer(1, 1) for _ in range(8)])  # each costs 0.003
    # Worst case 0.029: the budget holds one, not two, so a hold left over from the request before
    # (its settlement still under way) would refuse the next one.
    cfg = config("t-next", "sk-n", budget={"amount_usd": 0.05, "period": "daily"})
    body = {"model": "m", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}
    async with in_process_gateway([upstream], tmp_path, cfg) as client:
        statuses = [
            (await client.post("/v1/chat/completions", headers={"authorization": "Bearer sk-n"}, json=body)).status_code
            for _ in range(8)
        ]
    assert statuses == [200] * 8
    assert spent("t-next") == pytest.approx(0.024)


async def test_a_budget_cannot_be_held_for_a_model_without_a_price(tmp_path: Path) -> None:
    upstream = ScriptedTransport("a", [answer(5, 10)])
    cfg = {**config("t-unpriced", "sk-u", budget={"amount_usd": 1.0}), "spend": {"enabled": True}}
    async with in_process_gateway([upstream], tmp_path, cfg) as client:
        response = await client.post(
            "/v1/chat/completions",
            headers={"authorization": "Bearer sk-u"},
            json={"model": "m", "messages": [{"role": "user", "content": "hello"}]},
        )
    assert response.status_code == 403 and "No price" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("period", "when", "period_id", "reset"),
    [
        ("daily", "2026-12-31T23:59:59", "d20261231", "2027-01-01T00:00:00"),
        ("monthly", "2026-12-31T23:59:59", "m202612", "2027-01-01T00:00:00"),
        ("monthly", "2026-02-01T00:00:00", "m202602", "2026-03-01T00:00:00"),
        ("daily", "2028-02-28T12:00:00", "d20280228", "2028-02-29T00:00:00"),
    ],
)
def test_periods_reset_at_utc_midnight_and_on_the_first(period: str, when: str, period_id: str, reset: str) -> None:
    at = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC).timestamp()
    got_id, got_reset = period_window(period, at)
    assert got_id == period_id
    assert got_reset == dt.datetime.fromisoformat(reset).replace(tzinfo=dt.UTC).timestamp()


async def test_memory_counters_refuse_past_the_limit_and_settle() -> None:
    counters = MemorySpendCounters()
    c = [Counter("key:k", "key", "daily", "d1", 1e12, limit=1.0)]
    assert await counters.reserve(c, 0.6) is None
    refusal = await counters.reserve(c, 0.6)  # 0.6 held + 0.6 > 1.0
    assert refusal is not None and refusal.used == pytest.approx(0.6)
    await counters.settle(c, 0.6, 0.1)  # it cost 0.1 of its 0.6
    assert await counters.reserve(c, 0.6) is None
    ((spent, held),) = await counters.read(c)
    assert spent == pytest.approx(0.1) and held == pytest.approx(0.6)


def test_prices_default_for_the_bundled_and_sim_models_and_per_token_units() -> None:
    table = PriceTable(SpendSettings())
    assert "sim-model" in table and "smollm2-135m-instruct" in table
    per_token = PriceTable(SpendSettings(price_unit="per_token", prices={"x": {"input": 2, "output": 3}}))
    price = per_token.get("x")
    assert price is not None and price.cost(10, 1, cached_tokens=4) == 10 * 2 + 3  # cached defaults to input


class FlakySink:
    name = "flaky"

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.down = True
        self.wrote = asyncio.Event()

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        if self.down:
            raise ConnectionError("sink down")
        self.rows.extend(rows)
        self.wrote.set()

    async def aclose(self) -> None:
        return None


async def test_the_ledger_keeps_rows_while_its_sink_is_down_and_counts_what_it_drops() -> None:
    sink = FlakySink()
    ledger = Ledger(sink, LedgerSettings(batch_rows=10, flush_seconds=0.01, buffer_rows=25))
    ledger.start()
    for i in range(30):
        ledger.append((str(i),))
    assert ledger.dropped == 5 and ledger.buffered == 25
    sink.down = False
    await asyncio.wait_for(ledger.aclose(), 10)
    assert [r[0] for r in sink.rows] == [str(i) for i in range(25)]  # in order, none twice
    assert ledger.written == 25
