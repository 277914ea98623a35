"""Spend in money across two gateway replicas sharing a real Redis: team and tenant budgets under 48
concurrent `openai` clients, spend read back from the admin API and the metrics, and the ledger
written to PostgreSQL (a private server this test stops mid-run) and to a Redis stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.auth import hash_key
from tests.support.postgres import PostgresServer, postgres_available
from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import metric_value, sim_backend, start_gateway, start_sim, wait_for

pytestmark = pytest.mark.redis

ADMIN_KEY = "sk-admin-spend-test"
INPUT, OUTPUT = 100e-6, 1000e-6  # USD per token (100 and 1000 per million)
MAX_TOKENS = 20
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
# The reservation: "hi" is 2 bytes + 4 for the message = 6 prompt tokens, and 20 out.
WORST = 6 * INPUT + MAX_TOKENS * OUTPUT


def spend_config(redis: RedisServer, sim: ServerProcess, **ledger: Any) -> dict[str, Any]:
    return {
        "auth": {"mode": "keys"},
        "admin": {"key_sha256": hash_key(ADMIN_KEY)},
        # Generous: on a loaded test machine 48 clients' first calls can take longer than the default.
        "redis": {"url": redis.url, "socket_timeout": 2.0},
        "backends": [sim_backend("sim", sim, models=["sim-model"])],
        "spend": {
            "enabled": True,
            "prices": {"sim-model": {"input": 100, "output": 1000, "cached_input": 10}},
            **({"ledger": ledger} if ledger else {}),
        },
    }


def admin(gw: ServerProcess, method: str, path: str, **kw: Any) -> Any:
    answer = httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10, **kw)
    assert answer.status_code < 300, answer.text
    return answer.json()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim("--output-tokens", "5", log_dir=tmp_path)
    yield proc
    proc.stop()


async def _client_loop(url: str, key: str, costs: list[float], refusals: list[openai.RateLimitError]) -> None:
    """Send until refused twice: a refusal while other requests hold their reservations may be
    followed by room again."""
    refused = 0
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        while refused < 2:
            try:
                answer = await client.chat.completions.create(
                    model="sim-model",
                    messages=HI,
                    max_tokens=MAX_TOKENS,
                )
            except openai.RateLimitError as exc:
                refused += 1
                refusals.append(exc)
                continue
            assert answer.usage is not None
            costs.append(answer.usage.prompt_tokens * INPUT + answer.usage.completion_tokens * OUTPUT)


async def test_budgets_hold_across_replicas_under_48_concurrent_clients(
    tmp_path: Path, redis_server: RedisServer, sim: ServerProcess
) -> None:
    config = spend_config(redis_server, sim)
    one = start_gateway(config, tmp_path, name="one")
    two = start_gateway(config, tmp_path, name="two")
    try:
        red = admin(one, "POST", "/admin/keys", json={"tenant": "acme", "team": "red"})["key"]
        blue = admin(two, "POST", "/admin/keys", json={"tenant": "acme", "team": "blue"})["key"]
        admin(one, "PUT", "/admin/tenants/acme/budget", json={"amount_usd": 2.0, "period": "daily"})
        admin(two, "PUT", "/admin/tenants/acme/teams/red/budget", json={"amount_usd": 0.5, "period": "monthly"})
        costs: dict[str, list[float]] = {"red": [], "blue": []}
        refusals: list[openai.RateLimitError] = []
        # Neither replica has used the keys yet, so their first use reads the budgets with them.
        clients = [
            _client_loop((one, two)[i % 2].url, red if i < 24 else blue, costs["red" if i < 24 else "blue"], refusals)
            for i in range(48)
        ]
        started = time.time()
        await asyncio.gather(*clients)
        tenant = admin(two, "GET", "/admin/tenants/acme")
        team_red = admin(one, "GET", "/admin/tenants/acme/teams/red")
        async with httpx.AsyncClient() as client:
            one_metrics = (await client.get(one.url + "/metrics")).text
            two_metrics = (await client.get(two.url + "/metrics")).text
    finally:
        one.stop()
        two.stop()
    red_spent, tenant_spent = team_red["monthly"]["spent_usd"], tenant["daily"]["spent_usd"]
    # The shared counters saw every request that either replica let through, at its real cost ...
    assert red_spent == pytest.approx(sum(costs["red"]), rel=1e-9)
    assert tenant_spent == pytest.approx(sum(costs["red"]) + sum(costs["blue"]), rel=1e-9)
    assert tenant["daily"]["held_usd"] == pytest.approx(0, abs=1e-9)  # every reservation settled
    # ... and no budget was passed by more than one request's worst case (here, not at all).
    assert red_spent <= 0.5 + WORST
    assert tenant_spent <= 2.0 + WORST
    # Nor was much left unused: at most what the 48 clients' reservations could hold at once.
    assert tenant_spent >= 2.0 - 48 * WORST and red_spent >= 0.5 - 24 * WORST
    messages = {e.body["message"].split(" budget of")[0].split("would pass ")[1] for e in refusals}  # type: ignore[index]
    assert messages == {"your team's monthly", "your organisation's daily"}
    daily = next(e for e in refusals if "daily" in str(e))
    _, reset = _reset("daily")
    assert reset - time.time() - 2 <= int(daily.response.headers["retry-after"]) <= reset - started + 2
    assert {t["team"] for t in tenant["teams"]} == {"blue", "red"}  # the teams its keys name
    # Spend is exported per tenant and team: the two replicas' counters add up to the same.
    exported = sum(
        metric_value(text, "switchyard_spend_usd_total", tenant="acme") for text in (one_metrics, two_metrics)
    )
    assert exported == pytest.approx(tenant_spent, rel=1e-6)


def _reset(period: str) -> tuple[str, float]:
    from gateway.budgets import period_window

    return period_window(period, dt.datetime.now(dt.UTC).timestamp())


def _metrics(gw: ServerProcess) -> str:
    return httpx.get(gw.url + "/metrics").text


def _rows(pg: PostgresServer) -> list[tuple[Any, ...]]:
    import psycopg

    try:
        with psycopg.connect(pg.dsn, connect_timeout=2) as conn:
            return conn.execute("SELECT id, request_id, cost_usd FROM switchyard_ledger").fetchall()
    except psycopg.Error:
        return []


async def _send(url: str, key: str, n: int, concurrency: int = 16) -> list[str]:
    """`n` chat requests, `concurrency` at a time; the request ids of those answered 200."""
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:

        async def one() -> None:
            async with gate:
                r = await client.post("/v1/chat/completions", json={"model": "sim-model", "messages": HI,
                                                                   "max_tokens": 5})  # fmt: skip
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-request-id"])

        await asyncio.gather(*(one() for _ in range(n)))
    return ids


@pytest.mark.skipif(not postgres_available(), reason="initdb and pg_ctl are not installed")
async def test_the_postgres_ledger_loses_no_rows_under_load_or_when_postgres_stops(
    tmp_path: Path, redis_server: RedisServer, sim: ServerProcess
) -> None:
    pg = PostgresServer().start()
    try:
        config = spend_config(redis_server, sim, sink="postgres", dsn=pg.dsn, batch_rows=50, flush_seconds=0.2)
        gw = start_gateway(config, tmp_path)
        try:
            key = admin(gw, "POST", "/admin/keys", json={"tenant": "ledger"})["key"]
            ids = await _send(gw.url, key, 300)  # under load
            pg.stop("immediate")  # a crash mid-run: rows from now on wait in the gateway's buffer
            ids += await _send(gw.url, key, 200)
            wait_for(lambda: metric_value(_metrics(gw), "switchyard_store_errors_total",
                                          store="ledger") > 0, timeout=10, what="the outage noticed")  # fmt: skip
            pg.start()
            ids += await _send(gw.url, key, 100)
            wait_for(lambda: len(_rows(pg)) >= len(ids), timeout=30, what="every row written")
            text = _metrics(gw)
        finally:
            gw.stop()
        rows = _rows(pg)
        assert sorted(r[1] for r in rows) == sorted(ids)  # every answered request, once
        assert len({r[0] for r in rows}) == len(rows) and all(r[2] > 0 for r in rows)
        assert metric_value(text, "switchyard_ledger_rows_total", outcome="dropped") == 0
        assert metric_value(text, "switchyard_ledger_rows_total", outcome="written") == len(ids)
    finally:
        pg.remove()


@pytest.mark.skipif(not postgres_available(), reason="initdb and pg_ctl are not installed")
async def test_past_its_bound_the_ledger_drops_rows_and_counts_them(
    tmp_path: Path, redis_server: RedisServer, sim: ServerProcess
) -> None:
    pg = PostgresServer().start()
    pg.stop("immediate")  # down from the start: nothing can be written
    try:
        config = spend_config(redis_server, sim, sink="postgres", dsn=pg.dsn, buffer_rows=20, flush_seconds=0.1)
        gw = start_gateway(config, tmp_path)
        try:
            key = admin(gw, "POST", "/admin/keys", json={"tenant": "bounded"})["key"]
            await _send(gw.url, key, 50)

            def accounted() -> float:  # a row is appended once its request has settled, after the answer
                text = _metrics(gw)
                dropped = metric_value(text, "switchyard_ledger_rows_total", outcome="dropped")
                return dropped + metric_value(text, "switchyard_ledger_buffered_rows")

            wait_for(lambda: accounted() == 50, timeout=30, what="every request's row buffered or dropped")
            text = _metrics(gw)
            assert metric_value(text, "switchyard_ledger_rows_total", outcome="dropped") == 30
            assert metric_value(text, "switchyard_ledger_buffered_rows") == 20
            pg.start()
            wait_for(lambda: len(_rows(pg)) == 20, timeout=30, what="the buffered rows written")
        finally:
            gw.stop()
    finally:
        pg.remove()


async def test_the_ledger_can_be_a_redis_stream(tmp_path: Path, redis_server: RedisServer, sim: ServerProcess) -> None:
    import redis as redis_sync

    gw = start_gateway(spend_config(redis_server, sim, sink="redis", flush_seconds=0.1), tmp_path)
    try:
        key = admin(gw, "POST", "/admin/keys", json={"tenant": "streamed", "team": "t"})
        ids = await _send(gw.url, key["key"], 40)
        with redis_sync.Redis.from_url(redis_server.url, decode_responses=True) as r:
            wait_for(lambda: r.xlen("switchyard:ledger") == 40, timeout=10, what="40 rows in the stream")
            rows = [fields for _, fields in r.xrange("switchyard:ledger")]
    finally:
        gw.stop()
    assert sorted(row["request_id"] for row in rows) == sorted(ids)
    assert {(row["tenant"], row["team"], row["key_id"]) for row in rows} == {("streamed", "t", key["id"])}
    assert all(float(row["cost_usd"]) > 0 for row in rows)
