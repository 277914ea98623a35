"""Per-tenant limits shared through a real Redis by two gateway processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

from gateway.auth import hash_key
from tests.support.processes import RedisServer
from tests.support.stack import sim_backend, start_gateway, start_sim

pytestmark = pytest.mark.redis

KEY_A, KEY_B = "sk-tenant-a", "sk-tenant-b"


def _config(redis: RedisServer, sim_url_backend: dict[str, object], **limits: int) -> dict[str, object]:
    return {
        "auth": {
            "keys": [
                {"sha256": hash_key(KEY_A), "tenant": "a", **limits},
                {"sha256": hash_key(KEY_B), "tenant": "b", **limits},
            ]
        },
        "redis": {"url": redis.url},
        "backends": [sim_url_backend],
    }


def _chat(url: str, key: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "sim-model", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_request_limit_is_shared_by_two_gateways(tmp_path: Path, redis_server: RedisServer) -> None:
    sim = start_sim("--output-tokens", "4", log_dir=tmp_path)
    config = _config(redis_server, sim_backend("sim", sim, models=["sim-model"]), rpm=6)
    one = start_gateway(config, tmp_path, name="one")
    two = start_gateway(config, tmp_path, name="two")
    try:
        statuses = [_chat((one if i % 2 else two).url, KEY_A).status_code for i in range(12)]
        assert statuses.count(200) == 6 and statuses.count(429) == 6
        refused = _chat(one.url, KEY_A)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit-requests"] == "6"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        with openai.OpenAI(base_url=one.url + "/v1", api_key=KEY_A, max_retries=0) as client:
            with pytest.raises(openai.RateLimitError) as err:
                client.chat.completions.create(model="sim-model", messages=[{"role": "user", "content": "hi"}])
            assert err.value.response.headers["retry-after"]
        # Another tenant's budget is untouched.
        ok = _chat(two.url, KEY_B)
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "5"
    finally:
        one.stop()
        two.stop()
        sim.stop()


async def test_token_limit_reserves_up_front_and_settles_with_real_usage(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sim = start_sim("--output-tokens", "4", log_dir=tmp_path)
    # A request with max_tokens=100 and a two-byte prompt reserves 106 tokens (bytes, plus 4 for the message).
    config = _config(redis_server, sim_backend("sim", sim, models=["sim-model"]), tpm=250)
    gw = start_gateway(config, tmp_path)
    try:
        # In sequence, each request's unused reservation is refunded before its response ends,
        # so four of them fit where three reservations alone (312) would not.
        for _ in range(4):
            assert _chat(gw.url, KEY_A, max_tokens=100).status_code == 200
        # At once, reservations are what counts: two fit in 250 tokens, the third is refused.
        slow = {
            "model": "sim-model",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
            "sim": {"ttft_ms": 800},
        }
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY_B}"}, timeout=10) as client:
            results = await asyncio.gather(*(client.post(gw.url + "/v1/chat/completions", json=slow) for _ in range(3)))
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 200, 429]
        refused = next(r for r in results if r.status_code == 429)
        assert refused.headers["x-ratelimit-limit-tokens"] == "250"
    finally:
        gw.stop()
        sim.stop()


def test_keys_can_live_in_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    import json

    import redis as redis_sync

    sim = start_sim("--output-tokens", "2", log_dir=tmp_path)
    config = {
        "auth": {"redis_keys": True},
        "redis": {"url": redis_server.url},
        "backends": [sim_backend("sim", sim, models=["sim-model"])],
    }
    gw = start_gateway(config, tmp_path)
    try:
        assert _chat(gw.url, "sk-from-redis").status_code == 401
        with redis_sync.Redis.from_url(redis_server.url) as r:  # an operator adds a key: only its digest
            r.set("switchyard:key:" + hash_key("sk-from-redis"), json.dumps({"tenant": "c", "rpm": 1}))
        first, second = _chat(gw.url, "sk-from-redis"), _chat(gw.url, "sk-from-redis")
        assert first.status_code == 200 and second.status_code == 429  # the tenant's limits came along
    finally:
        gw.stop()
        sim.stop()
