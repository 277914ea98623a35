"""Per-tenant limits hold across three gateway replicas on one Redis under concurrent load: many
clients at once, spread over the replicas, never get more than the limit allows plus one request's
worth. The overshoot is measured and printed (run with -s to see it).

What the limit allows over a run: the full bucket at the start plus what refills while the run
lasts (rpm/60 a second; tpm/60 tokens a second), measured from the first request sent to the last
answer received, a window that contains the server's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.auth import hash_key
from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import sim_backend, start_gateway, start_sim

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RPM, TPM = 120, 2000
REQ_KEY, TOK_KEY, SHORT_KEY = "sk-replica-requests-1", "sk-replica-tokens-2", "sk-replica-tokens-3"
CLIENTS_PER_REPLICA = 16


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    tmp = tmp_path_factory.mktemp("replicas")
    server = RedisServer().start()
    sim = start_sim("--output-tokens", "4", "--ttft-ms", "20", "--itl-ms", "1", log_dir=tmp)
    config = {
        "auth": {
            "keys": [
                {"sha256": hash_key(REQ_KEY), "tenant": "requests", "rpm": RPM},
                {"sha256": hash_key(TOK_KEY), "tenant": "tokens", "tpm": TPM},
                {"sha256": hash_key(SHORT_KEY), "tenant": "tokens-short-words", "tpm": TPM},
            ]
        },
        "redis": {"url": server.url},
        "cache": {"enabled": False},
        "backends": [sim_backend("s", sim)],
        "relay": {"hedge": False},
    }
    gateways = [start_gateway(config, tmp, name=f"replica{i}") for i in range(3)]
    try:
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()
        sim.stop()
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        yield c


@dataclass
class Run:
    statuses: list[int]
    tokens: int  # usage of the answered requests, as the limiter charges it
    window: float  # first request sent to last answer received
    largest_estimate: int


async def _load(
    client: httpx.AsyncClient, replicas: list[ServerProcess], key: str, body: dict[str, Any], total: int
) -> Run:
    statuses: list[int] = []
    tokens = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker(gw: ServerProcess) -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            stream = i % 2 == 1
            request = {**body, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
            async with client.stream(
                "POST", gw.url + "/v1/chat/completions", json=request, headers={"authorization": f"Bearer {key}"}
            ) as response:
                statuses.append(response.status_code)
                if response.status_code != 200:
                    await response.aread()
                    continue
                if not stream:
                    answered = json.loads(await response.aread())  # read first: `+=` would load before awaiting
                    tokens += answered["usage"]["total_tokens"]
                    continue
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"usage":{' in line.replace(" ", ""):
                        usage = json.loads(line[6:]).get("usage")
                        if usage:
                            tokens += usage["total_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(worker(gw) for gw in replicas for _ in range(CLIENTS_PER_REPLICA)))
    window = time.perf_counter() - started
    estimate = len(body["messages"][0]["content"]) // 4 + 4 + int(body.get("max_tokens") or 256)
    return Run(statuses, tokens, window, estimate)


async def test_request_limit_holds_across_three_replicas(
    replicas: list[ServerProcess], client: httpx.AsyncClient
) -> None:
    body = {"model": "sim-model", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    run = await _load(client, replicas, REQ_KEY, body, total=500)
    allowed = RPM + run.window * RPM / 60
    served = run.statuses.count(200)
    assert set(run.statuses) == {200, 429}
    overshoot = served - allowed
    print(
        json.dumps(
            {
                "limit": "rpm",
                "rpm": RPM,
                "replicas": 3,
                "clients": 3 * CLIENTS_PER_REPLICA,
                "requests": len(run.statuses),
                "served": served,
                "window_s": round(run.window, 2),
                "allowed": round(allowed, 1),
                "overshoot_requests": round(overshoot, 2),
            }
        )
    )
    assert overshoot <= 1.0


async def test_token_limit_holds_across_three_replicas(
    replicas: list[ServerProcess], client: httpx.AsyncClient
) -> None:
    body = {"model": "sim-model", "max_tokens": 6, "messages": [{"role": "user", "content": "count to four"}]}
    run = await _load(client, replicas, TOK_KEY, body, total=600)
    allowed = TPM + run.window * TPM / 60
    overshoot = run.tokens - allowed
    assert run.statuses.count(429) > 0  # the limit was reached
    print(
        json.dumps(
            {
                "limit": "tpm",
                "tpm": TPM,
                "replicas": 3,
                "clients": 3 * CLIENTS_PER_REPLICA,
                "requests": len(run.statuses),
                "served": run.statuses.count(200),
                "tokens_used": run.tokens,
                "window_s": round(run.window, 2),
                "allowed": round(allowed, 1),
                "overshoot_tokens": round(overshoot, 1),
                "one_request_estimate": run.largest_estimate,
            }
        )
    )
    assert overshoot <= run.largest_estimate


async def test_token_limit_when_prompts_hold_more_tokens_than_estimated(
    replicas: list[ServerProcess], client: httpx.AsyncClient
) -> None:
    """Short words: two characters a token, where the gateway's estimate assumes four."""
    prompt = "a " * 150  # 300 characters: estimated 75 prompt tokens, counted 153 by the backend
    body = {"model": "sim-model", "max_tokens": 6, "messages": [{"role": "user", "content": prompt}]}
    run = await _load(client, replicas, SHORT_KEY, body, total=200)
    allowed = TPM + run.window * TPM / 60
    overshoot = run.tokens - allowed
    print(
        json.dumps(
            {
                "limit": "tpm, underestimated prompts",
                "tpm": TPM,
                "served": run.statuses.count(200),
                "tokens_used": run.tokens,
                "allowed": round(allowed, 1),
                "overshoot_tokens": round(overshoot, 1),
                "one_request_estimate": run.largest_estimate,
            }
        )
    )
    assert overshoot <= run.largest_estimate
