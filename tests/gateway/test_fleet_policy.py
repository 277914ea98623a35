"""Engine fleets, policy only: engine metrics parsing, saturation, the prefix chain, the prefix
balancer's affinity, spill and cold paths, round robin, and the hosts-file resolver."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from gateway import metrics
from gateway.backends.backend import Backend
from gateway.backends.circuit import CircuitBreaker
from gateway.backends.discovery import HostsFileResolver, replica_settings
from gateway.backends.engine_metrics import EngineStats, parse_engine_metrics
from gateway.backends.prefix import PrefixMap, prefix_chain, render_prompt
from gateway.backends.registry import BackendRegistry
from gateway.backends.ttft import TTFTModel
from gateway.settings import BackendSettings
from tests.support.processes import RedisServer

# As vLLM 0.32's CPU build exposes them (one engine, one model), trimmed to what is read.
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2-135m-instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2-135m-instruct"} 5.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2-135m-instruct"} 0.42
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="smollm2-135m-instruct"} 296.0
vllm:prefix_cache_queries_created{engine="0",model_name="smollm2-135m-instruct"} 1.796181894290026e+09
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="smollm2-135m-instruct"} 128.0
vllm:prefix_cache_hits_created{engine="0",model_name="smollm2-135m-instruct"} 1.796181894290079e+09
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def backend(name: str, clock: Clock, **settings: Any) -> Backend:
    config = BackendSettings(name=name, type="vllm", base_url="http://127.0.0.1:1/v1", models=["m"], **settings)
    return Backend(config, transport=None, circuit=CircuitBreaker(5, 10.0), ttft=TTFTModel(clock=clock),  # type: ignore[arg-type]
                   models={"m"})


def fleet(n: int, policy: str, clock: Clock, load_factor: float = 1.5) -> tuple[BackendRegistry, list[Backend]]:
    replicas = [backend(f"r{i}", clock) for i in range(n)]
    for r in replicas:
        for _ in range(5):
            r.ttft.observe(0.1, 0)
    registry = BackendRegistry(replicas, policy=policy, load_factor=load_factor, rng=random.Random(0), clock=clock)
    return registry, replicas


def decisions(decision: str) -> float:
    return metrics.BALANCER_DECISIONS.labels("m", decision)._value.get()  # type: ignore[no-any-return]


def test_vllm_metrics_parse_into_load_figures() -> None:
    stats = parse_engine_metrics("vllm", VLLM_METRICS, 7.0)
    assert stats == EngineStats(running=3, waiting=5, kv_usage=0.42, prefix_hits=128, prefix_queries=296, scraped_at=7)
    assert stats.load == 8


def test_a_saturated_engine_is_avoided_before_its_ttft_shows_it() -> None:
    clock = Clock()
    registry, (a, b) = fleet(2, "ttft", clock)
    a.ttft.observe(0.01, 0)  # a looks faster by its history
    assert registry.rank("m")[0] is a
    a.engine = EngineStats(kv_usage=0.97, scraped_at=clock.now)
    assert [x.name for x in registry.rank("m")] == ["r1", "r0"]
    a.engine = EngineStats(waiting=4, scraped_at=clock.now)  # queue_saturation's default
    assert registry.rank("m")[0] is b
    clock.now += 60  # figures that stopped coming are not trusted
    assert registry.rank("m")[0] is a


def test_engine_load_counts_other_gateways_requests() -> None:
    clock = Clock()
    registry, (a, b) = fleet(2, "least_outstanding", clock)
    a.engine = EngineStats(running=6, scraped_at=clock.now)  # sent by another gateway replica
    b.outstanding = 2
    assert registry.rank("m")[0] is b


def conversation(system: str, turns: int) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"question {i} " * 20}, {"role": "assistant", "content": f"a{i}" * 50}]
    return {"model": "m", "messages": messages}


def test_a_conversations_next_turn_extends_its_chain() -> None:
    system = "You are a careful assistant. " * 40
    first = prefix_chain(render_prompt(conversation(system, 1)), 64, "m")
    second = prefix_chain(render_prompt(conversation(system, 2)), 64, "m")
    assert len(second) > len(first) >= 10
    assert second[: len(first)] == first
    other = prefix_chain(render_prompt(conversation("Another prompt entirely. " * 40, 1)), 64, "m")
    assert other[0] != first[0]
    assert prefix_chain(render_prompt(conversation(system, 1)), 64, "other-model")[0] != first[0]
    assert prefix_chain("short", 64, "m") == []  # no full chunk: nothing to match
    completion = prefix_chain(render_prompt({"prompt": "x" * 200}), 64, "m")
    assert len(completion) == 3


def test_prefix_map_finds_the_longest_known_link() -> None:
    async def run() -> None:
        prefixes = PrefixMap(ttl=60, entries=1000)
        chain = prefix_chain("abcdefgh" * 64, 32, "m")
        prefixes.record(chain[:4], "r0")
        prefixes.record(chain[:10], "r1")
        assert await prefixes.owner(chain) == ("r1", 10)
        assert await prefixes.owner(chain[:3]) == ("r1", 3)  # r1 served those links last
        assert await prefixes.owner(prefix_chain("zz" * 400, 32, "m")) is None

    asyncio.run(run())


def test_prefix_map_stays_within_its_size() -> None:
    prefixes = PrefixMap(ttl=60, entries=5)
    chain = prefix_chain("q" * 640, 32, "m")
    prefixes.record(chain, "r0")
    assert asyncio.run(prefixes.owner(chain[:3])) is None  # the oldest links went first
    assert asyncio.run(prefixes.owner(chain)) == ("r0", 20)


def test_prefix_balancer_sends_a_prefix_to_its_replica_and_spills_past_the_load_bound() -> None:
    clock = Clock()
    registry, (a, b, c) = fleet(3, "prefix", clock, load_factor=1.5)
    before = {d: decisions(d) for d in ("affinity", "spill", "cold")}
    lease = registry.try_acquire("m", affinity="r2")
    assert lease is not None and lease.backend is c
    # c holds 1 of 1: bound ceil(1.5 * 2 / 3) = 1, so a second request spills to the next best.
    lease = registry.try_acquire("m", affinity="r2")
    assert lease is not None and lease.backend is not c
    lease = registry.try_acquire("m", affinity=None)  # cold: the predicted TTFT picks
    assert lease is not None and lease.backend.outstanding == 1
    assert decisions("affinity") - before["affinity"] == 1
    assert decisions("spill") - before["spill"] == 1
    assert decisions("cold") - before["cold"] == 1
    c.engine = EngineStats(kv_usage=1.0, scraped_at=clock.now)
    c.outstanding = 0
    a.outstanding = b.outstanding = 0
    lease = registry.try_acquire("m", affinity="r2")  # a saturated replica is spilled from too
    assert lease is not None and lease.backend is not c


def test_prefix_affinity_to_a_replica_that_is_not_usable_spills() -> None:
    clock = Clock()
    registry, (a, b) = fleet(2, "prefix", clock)
    a.draining = True
    before = decisions("spill")
    lease = registry.try_acquire("m", affinity="r0")
    assert lease is not None and lease.backend is b
    assert decisions("spill") - before == 1


def test_round_robin_takes_turns() -> None:
    clock = Clock()
    registry, _replicas = fleet(3, "round_robin", clock)
    chosen = []
    for _ in range(6):
        lease = registry.try_acquire("m")
        assert lease is not None
        chosen.append(lease.backend.name)
        registry.release(lease)
    assert chosen == ["r0", "r1", "r2", "r0", "r1", "r2"]


def test_hosts_file_resolver(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# replicas\n10.0.0.1 vllm vllm.default\n10.0.0.2 vllm  # second\n10.0.0.3 other\n::1 vllm\n")
    resolver = HostsFileResolver(hosts)
    assert asyncio.run(resolver.resolve("vllm")) == ["10.0.0.1", "10.0.0.2", "::1"]
    assert asyncio.run(resolver.resolve("missing")) == []
    assert asyncio.run(HostsFileResolver(tmp_path / "nope").resolve("vllm")) == []


@pytest.mark.parametrize(
    ("base_url", "address", "expected"),
    [
        ("http://vllm:8000/v1", "10.0.0.7", "http://10.0.0.7:8000/v1"),
        ("http://vllm.ns.svc/v1", "fd00::7", "http://[fd00::7]/v1"),
    ],
)
def test_a_replica_is_its_group_at_one_address(base_url: str, address: str, expected: str) -> None:
    group = BackendSettings(name="vllm", type="vllm", base_url=base_url, discovery="dns", models=["m"])
    replica = replica_settings(group, address)
    assert replica.base_url == expected and replica.name == f"vllm@{address}" and replica.discovery is None
    assert replica.models == ["m"] and replica.type == "vllm"


def test_discovery_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="hosts_file needs discovery"):
        BackendSettings(name="x", base_url="http://x/v1", hosts_file="/etc/hosts")
    with pytest.raises(ValueError, match="base_url is required for a vllm backend"):
        BackendSettings(name="x", type="vllm")


@pytest.mark.redis
def test_gateway_replicas_share_the_prefix_map_through_redis(redis_server: RedisServer) -> None:
    """One gateway records which replica served a prefix; another, with its own memory, finds it in
    Redis. With Redis gone each keeps routing by what it saw itself."""
    import redis.asyncio as aioredis

    async def run() -> None:
        one, two = (aioredis.Redis.from_url(redis_server.url, socket_timeout=0.25) for _ in range(2))
        first = PrefixMap(ttl=60, entries=1000, redis=one, key_prefix="test:prefix:")
        second = PrefixMap(ttl=60, entries=1000, redis=two, key_prefix="test:prefix:")
        chain = prefix_chain("shared system prompt " * 50, 64, "m")
        first.record(chain, "r1")
        await first.aclose()  # its writes have landed
        assert await second.owner([*chain, "unseen"]) == ("r1", len(chain))
        keys = await one.keys("test:prefix:*")
        assert len(keys) == len(chain) and 0 < await one.ttl(keys[0]) <= 60
        redis_server.stop()
        assert await first.owner(chain) == ("r1", len(chain))  # its own memory answers
        assert await second.owner(chain) is None  # it never saw the prefix itself
        await one.aclose()
        await two.aclose()

    asyncio.run(run())
