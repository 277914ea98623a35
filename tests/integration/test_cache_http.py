"""The response cache seen from clients: headers, streamed hits, tenants, control headers, and a
Redis shared by two gateways that keeps serving through a Redis outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.auth import hash_key
from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim, wait_for

KEY_A, KEY_B = "sk-cache-a", "sk-cache-b"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How do I reset my password?"}]
QUESTION: dict[str, Any] = {"model": "sim-model", "temperature": 0, "messages": MESSAGES}


def _auth(redis: RedisServer | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auth": {"keys": [{"sha256": hash_key(KEY_A), "tenant": "a"}, {"sha256": hash_key(KEY_B), "tenant": "b"}]},
        **extra,
    }
    if redis is not None:
        config["redis"] = {"url": redis.url}
    return config


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_sim("--output-tokens", "8", log_dir=tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


def _ask(url: str, key: str, body: dict[str, Any] = QUESTION, cache_control: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if cache_control:
        headers["cache-control"] = cache_control
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers)


def test_exact_hits_streamed_hits_and_tenant_partition(tmp_path: Path, sim: ServerProcess) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim)]), tmp_path)
    try:
        first = _ask(gw.url, KEY_A)
        assert first.headers["x-switchyard-cache"] == "miss"
        again = _ask(gw.url, KEY_A)
        assert again.headers["x-switchyard-cache"] == "exact"
        assert again.json()["choices"] == first.json()["choices"]
        assert SimControl(sim).requests_to() == 1
        # The same prompt from another tenant never sees tenant a's entry.
        other = _ask(gw.url, KEY_B)
        assert other.headers["x-switchyard-cache"] == "miss"
        assert SimControl(sim).requests_to() == 2
        # A streamed hit is a real SSE stream that the SDK reads back to the same text.
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_A, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="sim-model", temperature=0, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            assert raw.headers["x-switchyard-cache"] == "exact"
            chunks = list(raw.parse())
        content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(content) > 1
        assert "".join(content) == first.json()["choices"][0]["message"]["content"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
        assert SimControl(sim).requests_to() == 2
    finally:
        gw.stop()


def test_streamed_misses_are_stored(tmp_path: Path, sim: ServerProcess) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim)]), tmp_path)
    try:
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_A, max_retries=0) as client:
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="sim-model", temperature=0, messages=MESSAGES, stream=True
                )
                if c.choices
            )
        hit = _ask(gw.url, KEY_A)
        assert hit.headers["x-switchyard-cache"] == "exact"
        assert hit.json()["choices"][0]["message"]["content"] == streamed
    finally:
        gw.stop()


def test_abandoned_and_failed_streams_are_not_stored(tmp_path: Path, sim: ServerProcess) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim)]), tmp_path)
    stream = {**QUESTION, "stream": True}
    headers = {"authorization": f"Bearer {KEY_A}"}
    try:
        SimControl(sim).configure(itl_ms={"kind": "fixed", "value": 100})  # eight chunks over most of a second
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=stream, headers=headers) as resp:
            next(line for line in resp.iter_lines() if '"content":"' in line.replace(" ", ""))
        cancelled = "switchyard_client_cancellations_total"
        wait_for(lambda: metric_value(httpx.get(gw.url + "/metrics").text, cancelled) >= 1, what=cancelled)
        SimControl(sim).configure(itl_ms={"kind": "fixed", "value": 0}, faults={"disconnect": 1.0})
        with openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY_A, max_retries=0) as client, pytest.raises(
            openai.APIError
        ):
            list(client.chat.completions.create(model="sim-model", temperature=0, messages=MESSAGES, stream=True))
        SimControl(sim).configure(faults={"disconnect": 0.0})
        # Neither the cut stream nor the broken one left an entry: this is a miss, and it is stored.
        assert _ask(gw.url, KEY_A).headers["x-switchyard-cache"] == "miss"
        assert _ask(gw.url, KEY_A).headers["x-switchyard-cache"] == "exact"
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.2},
        {"messages": [{"role": "system", "content": "Answer in French."}, *MESSAGES]},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
        {"model": "other-model"},
    ],
    ids=["temperature", "system-prompt", "tools", "model"],
)
def test_what_changes_the_answer_never_shares_an_entry(
    tmp_path: Path, sim: ServerProcess, change: dict[str, Any]
) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim, models=["sim-model", "other-model"])]), tmp_path)
    try:
        assert _ask(gw.url, KEY_A).headers["x-switchyard-cache"] == "miss"
        assert _ask(gw.url, KEY_A, {**QUESTION, **change}).headers["x-switchyard-cache"] == "miss"
    finally:
        gw.stop()


def test_cache_control_headers(tmp_path: Path, sim: ServerProcess) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim)]), tmp_path)
    try:
        assert _ask(gw.url, KEY_A, cache_control="no-store").headers["x-switchyard-cache"] == "bypass"
        assert _ask(gw.url, KEY_A, cache_control="no-cache").headers["x-switchyard-cache"] == "bypass"
        # no-cache still stored its answer
        assert _ask(gw.url, KEY_A).headers["x-switchyard-cache"] == "exact"
        assert SimControl(sim).requests_to() == 2
    finally:
        gw.stop()


def test_semantic_hit_for_a_paraphrase_but_not_for_a_negation(tmp_path: Path, sim: ServerProcess) -> None:
    # A generous embedding deadline: CI machines are slow, and a late embedding is (rightly) a miss.
    config = _auth(backends=[sim_backend("s", sim)], cache={"embed_timeout_s": 2.0})
    gw = start_gateway(config, tmp_path, lean=False, timeout=120)
    try:
        base = {"model": "sim-model", "temperature": 0}
        _ask(gw.url, KEY_A, {**base, "messages": [{"role": "user", "content": "How do I cancel my subscription?"}]})
        para = _ask(
            gw.url, KEY_A, {**base, "messages": [{"role": "user", "content": "How can I cancel my subscription?"}]}
        )
        assert para.headers["x-switchyard-cache"] == "semantic", para.headers.get("x-switchyard-cache-reason")
        assert float(para.headers["x-switchyard-cache-similarity"]) > 0.9
        trap = _ask(
            gw.url, KEY_A, {**base, "messages": [{"role": "user", "content": "How do I not cancel my subscription?"}]}
        )
        assert trap.headers["x-switchyard-cache"] == "miss"
        # Tenant b asking the paraphrase gets nothing of tenant a's.
        other = _ask(
            gw.url, KEY_B, {**base, "messages": [{"role": "user", "content": "How can I cancel my subscription?"}]}
        )
        assert other.headers["x-switchyard-cache"] == "miss"
    finally:
        gw.stop()


@pytest.mark.redis
def test_two_gateways_share_entries_and_survive_a_redis_outage(
    tmp_path: Path, sim: ServerProcess, redis_server: RedisServer
) -> None:
    config = _auth(redis_server, backends=[sim_backend("s", sim)])
    one = start_gateway(config, tmp_path, name="one")
    two = start_gateway(config, tmp_path, name="two")
    try:
        assert _ask(one.url, KEY_A).headers["x-switchyard-cache"] == "miss"
        assert _ask(two.url, KEY_A).headers["x-switchyard-cache"] == "exact"  # written by one, served by two
        redis_server.stop()
        during = _ask(one.url, KEY_A, {**QUESTION, "messages": [{"role": "user", "content": "Another question"}]})
        assert during.status_code == 200 and during.headers["x-switchyard-cache"] == "bypass"
        detail = httpx.get(one.url + "/readyz").json()
        assert detail["ready"] is True and detail["cache"]["up"] is False
        redis_server.start()  # an empty Redis on the same port: both recover on their own
        assert _recovers(one.url) == "miss"  # the entry died with the old Redis; this stores it again
        assert _recovers(two.url) == "exact"
    finally:
        one.stop()
        two.stop()


def _recovers(url: str) -> str:
    """Ask until the cache stops bypassing (it retries the store after a short back-off)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = _ask(url, KEY_A).headers["x-switchyard-cache"]
        if status != "bypass":
            return status
        time.sleep(0.1)  # polling an observable state, bounded by the deadline
    raise AssertionError("the cache did not recover")


async def test_identical_concurrent_requests_cost_one_backend_call(tmp_path: Path, sim: ServerProcess) -> None:
    gw = start_gateway(_auth(backends=[sim_backend("s", sim)]), tmp_path)
    body = {**QUESTION, "sim": {"ttft_ms": 500}}  # slow enough that all ten arrive while the first runs
    try:
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY_A}"}, timeout=30) as client:
            replies = await asyncio.gather(
                *(client.post(gw.url + "/v1/chat/completions", json=body) for _ in range(10))
            )
        assert [r.status_code for r in replies] == [200] * 10
        assert len({r.json()["choices"][0]["message"]["content"] for r in replies}) == 1
        assert SimControl(sim).requests_to() == 1
        reasons = [r.headers.get("x-switchyard-cache-reason") for r in replies]
        assert reasons.count("coalesced") == 9
        # Another tenant's identical request is never answered from tenant a's flight.
        other = _ask(gw.url, KEY_B, body)
        assert other.headers["x-switchyard-cache"] == "miss"
    finally:
        gw.stop()
