"""Every metric the dashboard and the alert rules name exists in a real gateway's /metrics.

The gateway runs config/examples/compose.yaml — the compose stack's own configuration, Redis,
router and semantic cache included — with its addresses pointed at a private Redis and two sims on
this machine, and gets a little traffic of each kind so the labelled series appear.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.queries import SCRAPE_LABELS, Query, dashboard_queries, metric_families, rule_queries
from tests.support.processes import REPO, RedisServer, ServerProcess
from tests.support.stack import metric_value, start_gateway, start_sim, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]

COMPOSE_CONFIG = REPO / "config" / "examples" / "compose.yaml"
DEMO_KEY, BATCH_KEY = "sk-switchyard-demo", "sk-switchyard-batch"  # documented in compose.yaml
# Series Prometheus itself makes for every target.
SYNTHETIC = {"up"}


def _declared_labels() -> dict[str, set[str]]:
    """Exposed sample name → label names, from the metric objects the gateway process registers."""
    from prometheus_client.metrics import MetricWrapperBase

    labels: dict[str, set[str]] = {}
    for module_name in ("gateway.metrics", "cache.metrics", "router.metrics", "batching.metrics"):
        for value in vars(importlib.import_module(module_name)).values():
            if not isinstance(value, MetricWrapperBase):
                continue
            # prometheus_client keeps these on the wrapper only (as gateway.reference does).
            kind, name, names = value._type, value._name, set(value._labelnames)
            if kind == "counter":
                labels[name + "_total"] = names
            elif kind == "histogram":
                labels.update({name + "_bucket": names | {"le"}, name + "_sum": names, name + "_count": names})
            else:
                labels[name] = names
    return labels


def _exists(name: str, families: dict[str, str]) -> bool:
    """A referenced series name is exposed: a counter by its `_total` name, a gauge by its name, a
    histogram by `_bucket`/`_sum`/`_count` — never a histogram's bare family name."""
    if families.get(name) in ("counter", "gauge", "untyped"):
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            kind = families.get(name.removesuffix(suffix))
            return kind == "histogram" or (kind == "summary" and suffix != "_bucket")
    return False


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    fast = start_sim("--output-tokens", "6", "--ttft-ms", "5", "--itl-ms", "2", log_dir=tmp_path, name="fast")
    slow = start_sim("--output-tokens", "6", "--ttft-ms", "40", "--itl-ms", "5", log_dir=tmp_path, name="slow")
    try:
        yield {"sim-fast": fast, "sim-slow": slow}
    finally:
        fast.stop()
        slow.stop()


def _compose_config_here(redis: RedisServer, sims: dict[str, ServerProcess]) -> dict[str, Any]:
    """compose.yaml with the compose service addresses replaced by this machine's processes."""
    config: dict[str, Any] = yaml.safe_load(COMPOSE_CONFIG.read_text())
    config["redis"]["url"] = redis.url
    for backend in config["backends"]:
        backend["base_url"] = sims[backend["name"]].url + "/v1"
    del config["server"]["state_dir"]  # start_gateway gives each test its own
    return config


def _tools(n: int) -> list[dict[str, Any]]:
    topics = ["weather", "stocks", "flights", "hotels", "email", "calendar", "music", "news", "maps", "notes"]
    return [
        {
            "type": "function",
            "function": {
                "name": f"get_{topics[i % len(topics)]}_{i}",
                "description": f"Look up {topics[i % len(topics)]} information, variant {i}.",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
        for i in range(n)
    ]


def _send_traffic(url: str) -> None:
    demo = {"authorization": f"Bearer {DEMO_KEY}"}
    question = {"model": "sim-model", "temperature": 0, "messages": [{"role": "user", "content": "What is Redis?"}]}
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/v1/chat/completions", json=question, headers=demo).status_code == 200
        # The answer reaches Redis in the background: ask again until the exact layer has it.
        deadline = time.monotonic() + 10
        while True:
            again = client.post("/v1/chat/completions", json=question, headers=demo)
            assert again.status_code == 200
            if again.headers["x-switchyard-cache"] == "exact" or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling the background store; nothing to wait on from outside
        assert again.headers["x-switchyard-cache"] == "exact"
        for i in range(6):  # both backends get some: the TTFT balancer explores while it learns
            body = {**question, "stream": True, "temperature": 1, "messages": [{"role": "user", "content": f"hi {i}"}]}
            with client.stream("POST", "/v1/chat/completions", json=body, headers=demo) as resp:
                assert resp.status_code == 200
                resp.read()
        tools = {
            **question,
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
            "tools": _tools(24),
        }
        assert client.post("/v1/chat/completions", json=tools, headers=demo).status_code == 200
        assert (
            client.post("/v1/chat/completions", json=question, headers={"authorization": "Bearer nope"}).status_code
            == 401
        )
        # The batch tenant's 60 requests per minute run out (tokens are settled at actual use).
        batch = {"authorization": f"Bearer {BATCH_KEY}"}
        statuses: list[int] = []
        while 429 not in statuses and len(statuses) < 70:
            statuses.append(client.post("/v1/chat/completions", json=question, headers=batch).status_code)
        assert statuses.count(200) == 60 and statuses[-1] == 429


def test_dashboard_and_alert_metrics_exist_in_a_running_gateway(
    tmp_path: Path, redis_server: RedisServer, sims: dict[str, ServerProcess]
) -> None:
    gw = start_gateway(_compose_config_here(redis_server, sims), tmp_path, lean=False, timeout=180)
    try:
        _send_traffic(gw.url)
        exposition = httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()

    families = metric_families(exposition)
    rules, recorded = rule_queries()
    queries: list[Query] = dashboard_queries() + rules
    missing = {
        f"{q.where}: {name}"
        for q in queries
        for name in q.metrics
        if name not in recorded and name not in SYNTHETIC and not _exists(name, families)
    }
    assert missing == set()

    # Labels a query filters or groups by are labels the metric has (or Prometheus adds).
    declared = _declared_labels()
    unknown_labels = {
        f"{q.where}: {name} has no {sorted(wanted - declared[name] - SCRAPE_LABELS)}"
        for q in queries
        for name, wanted in q.labels.items()
        if name in declared and wanted - declared[name] - SCRAPE_LABELS
    }
    assert unknown_labels == set()
    assert {n for q in queries for n in q.metrics} - recorded - SYNTHETIC <= set(declared)

    # The traffic made the labelled series the main panels draw.
    for backend in ("sim-fast", "sim-slow"):
        assert metric_value(exposition, "switchyard_backend_up", backend=backend) == 1
    assert metric_value(exposition, "switchyard_time_to_first_token_seconds_count", model="sim-model") >= 6
    assert metric_value(exposition, "switchyard_requests_total", status="200") >= 9
    assert metric_value(exposition, "switchyard_requests_total", status="401") == 1
    assert metric_value(exposition, "switchyard_cache_hits_total", layer="exact") >= 1
    assert metric_value(exposition, "switchyard_rate_limited_total") >= 1
    assert metric_value(exposition, "switchyard_router_requests_total") >= 1
    assert metric_value(exposition, "switchyard_cache_store_up") == 1  # the cache is on Redis, and Redis answers


FLEET_METRICS = (
    "switchyard_replica_kv_cache_usage_ratio",
    "switchyard_replica_requests",
    "switchyard_replica_prefix_cache_hits_tokens_total",
    "switchyard_replica_prefix_cache_queries_tokens_total",
    "switchyard_balancer_decisions_total",
)


@pytest.mark.vllm
def test_fleet_panels_metrics_have_samples_in_front_of_real_vllm(tmp_path: Path, vllm_servers: Any) -> None:
    """The engine-fleet panels draw what a gateway in front of vLLM replicas exposes: per-replica
    KV usage, queue and prefix-cache counters scraped from vLLM, and the prefix balancer's choices."""
    servers = vllm_servers(2)
    backends = [
        {"name": f"vllm-{i}", "type": "vllm", "base_url": s.base_url, "models": ["smollm2-135m-instruct"],
         "metrics_interval": 0.5}
        for i, s in enumerate(servers)
    ]
    config = {"auth": {"mode": "none"}, "cache": {"enabled": False}, "relay": {"balancer": "prefix"},
              "backends": backends}
    gw = start_gateway(config, tmp_path, timeout=120)
    try:
        messages = [{"role": "system", "content": f"Metrics check {time.time()}: " + "be brief. " * 200}]
        with httpx.Client(base_url=gw.url, timeout=120) as client:
            for turn in range(2):
                messages.append({"role": "user", "content": f"turn {turn}"})
                body = {"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 4, "temperature": 0}
                resp = client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200
                messages.append({"role": "assistant", "content": resp.json()["choices"][0]["message"]["content"]})

        def scraped() -> bool:
            text = httpx.get(gw.url + "/metrics").text
            return metric_value(text, "switchyard_replica_prefix_cache_queries_tokens_total") > 0

        wait_for(scraped, timeout=10, what="a scrape after the traffic")
        exposition = httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
    used = {name for q in dashboard_queries() for name in q.metrics}
    assert set(FLEET_METRICS) <= used  # the panels draw these
    for backend in ("vllm-0", "vllm-1"):
        assert f'switchyard_replica_kv_cache_usage_ratio{{backend="{backend}"}}' in exposition
        assert f'switchyard_replica_requests{{backend="{backend}",state="waiting"}}' in exposition
    assert metric_value(exposition, "switchyard_balancer_decisions_total", decision="cold") >= 1
    assert metric_value(exposition, "switchyard_balancer_decisions_total", decision="affinity") >= 1
