"""Secrets: client keys are kept only as SHA-256 digests and compared by digest; prompts and keys never
reach a log line or a metric label; an upstream's credentials never reach a client, whatever the
upstream says about them (error bodies, plain-text errors, mid-stream error events, headers).

(The client key never going upstream, and a plain upstream 401 hiding the upstream key, are in
tests/integration/test_openai_surface.py.)
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from gateway import auth
from gateway.auth import KeyStore, hash_key
from gateway.settings import ConfigError, load_settings
from tests.support.processes import RedisServer, ServerProcess, free_port
from tests.support.stack import sim_backend, start_gateway, start_sim

pytestmark = pytest.mark.redis

CLIENT_KEY = "sk-client-Q7ZXW-alpha-0192837465"
REDIS_KEY = "sk-redis-held-K4J9P-5647382910"
WRONG_KEY = "sk-wrong-guess-M2N8B-1122334455"
UPSTREAM_KEY = "sk-upstream-V9T3R-secret-7788990011"
PROMPT = "zebra-quasar-7781 what is the tallest mountain on Mars"
SECRETS = {
    "client key": CLIENT_KEY,
    "redis key": REDIS_KEY,
    "wrong key": WRONG_KEY,
    "upstream key": UPSTREAM_KEY,
    "prompt": "zebra-quasar-7781",
}
ECHO_MODES = [
    "status-400",
    "status-401",
    "status-403",
    "status-429",
    "status-500",
    "plain-text-500",
    "stream-error",
    "header",
    "quote",
]


@dataclass
class Stack:
    gateway: ServerProcess
    redis: RedisServer
    log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("secrets")
    server = RedisServer().start()
    with redis.Redis.from_url(server.url) as r:  # a key provisioned in Redis, by digest
        r.set(f"switchyard:key:{hash_key(REDIS_KEY)}", orjson.dumps({"tenant": "held-in-redis"}))
    sim = start_sim("--output-tokens", "4", log_dir=tmp)
    echo_port = free_port()
    echo = ServerProcess(
        [sys.executable, "-m", "tests.security.echo_upstream", "--port", str(echo_port)], echo_port
    ).start()
    config = {
        "server": {"log_level": "debug"},
        "auth": {"keys": [{"sha256": hash_key(CLIENT_KEY), "tenant": "alpha"}], "redis_keys": True},
        "redis": {"url": server.url},
        "backends": [
            sim_backend("sim", sim),
            {
                "name": "echo",
                "base_url": f"http://127.0.0.1:{echo_port}/v1",
                "models": ["echo-model"],
                "api_key_env": "ECHO_UPSTREAM_KEY",
            },
        ],
        "resilience": {"retries": 0, "circuit_failures": 1000},
    }
    gw = start_gateway(config, tmp, env={"ECHO_UPSTREAM_KEY": UPSTREAM_KEY})
    assert gw.log_path is not None
    try:
        yield Stack(gw, server, gw.log_path)
    finally:
        gw.stop()
        echo.stop()
        sim.stop()
        server.stop()


def _post(stack: Stack, body: dict[str, Any], key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(
        stack.gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=10
    )


def _seen_by_client(response: httpx.Response) -> str:
    return response.text + json.dumps(dict(response.headers))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("mode", ECHO_MODES)
def test_upstream_credentials_never_reach_the_client(stack: Stack, mode: str, stream: bool) -> None:
    body = {"model": "echo-model", "messages": [{"role": "user", "content": "hi"}], "echo": mode, "stream": stream}
    response = _post(stack, body)
    seen = _seen_by_client(response)
    assert UPSTREAM_KEY not in seen and "V9T3R" not in seen, seen[:1000]
    assert response.status_code != 500 and "Traceback" not in seen


def test_client_keys_are_held_only_as_digests(stack: Stack, tmp_path: Path) -> None:
    for key in (CLIENT_KEY, REDIS_KEY):
        body = {"model": "sim-model", "messages": [{"role": "user", "content": PROMPT}]}
        assert _post(stack, body, key).status_code == 200
    assert (
        _post(stack, {"model": "sim-model", "messages": [{"role": "user", "content": "x"}]}, WRONG_KEY).status_code
        == 401
    )
    # The configuration the gateway runs from names digests only.
    configs = list(stack.log.parent.glob("gateway-*.yaml"))
    assert configs and all(CLIENT_KEY not in p.read_text() for p in configs)
    # Redis: every key name and every value, after traffic, holds no raw key.
    with redis.Redis.from_url(stack.redis.url) as r:
        names = [n.decode() for n in r.scan_iter("*")]
        assert f"switchyard:key:{hash_key(REDIS_KEY)}" in names
        dump = "\n".join(names) + "\n".join(repr(_value(r, n)) for n in names)
    for key in (CLIENT_KEY, REDIS_KEY, WRONG_KEY):
        assert key not in dump
    # In memory: a key store that has authenticated both keys holds neither.
    settings = load_settings(overrides={"auth": {"keys": [{"sha256": hash_key(CLIENT_KEY), "tenant": "alpha"}]}})
    store = KeyStore(settings.auth, settings.limits)

    async def use() -> None:
        await store.authenticate(f"Bearer {CLIENT_KEY}")

    asyncio.run(use())
    assert CLIENT_KEY not in repr(vars(store)) and set(store._tenants) == {hash_key(CLIENT_KEY)}


def _value(r: redis.Redis, name: str) -> Any:
    raw = r.type(name)
    kind = raw.decode() if isinstance(raw, bytes) else raw
    if kind == "string":
        return r.get(name)
    if kind == "hash":
        return r.hgetall(name)
    if kind == "list":
        return r.lrange(name, 0, -1)
    if kind == "set":
        return r.smembers(name)
    if kind == "zset":
        return r.zrange(name, 0, -1)
    if kind == "stream":
        return r.xrange(name)
    return None


def test_a_raw_key_in_the_config_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(overrides={"auth": {"keys": [{"sha256": CLIENT_KEY, "tenant": "alpha"}]}})
    assert "auth.keys.0.sha256" in str(refused.value)
    assert CLIENT_KEY not in str(refused.value)


def test_keys_are_compared_by_digest_in_constant_time() -> None:
    """Read the code path: the presented key is hashed before anything looks at it; the lookup is by
    digest (what a timing difference could reveal is the digest, which says nothing of the key); the
    only direct comparison of secrets is `hmac.compare_digest`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(KeyStore.authenticate)))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    secret_names = {"key", "digest", "stored"}
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "key" and isinstance(n.ctx, ast.Load)]
    assert reads
    for read in reads:  # the presented key is only stripped, tested for emptiness, and hashed
        parent = parents[read]
        stripped = isinstance(parent, ast.Attribute) and parent.attr == "strip"
        emptiness = isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.Not)
        hashed = isinstance(parent, ast.Call) and getattr(parent.func, "id", "") == "hash_key"
        assert stripped or emptiness or hashed, f"the raw key is used at line {read.lineno}: {ast.dump(parent)}"
    for path in (inspect.getsourcefile(auth),):
        module = ast.parse(Path(str(path)).read_text())
        for node in ast.walk(module):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                assert not names & secret_names, f"secret compared with == at line {node.lineno}"
    assert "compare_digest" in inspect.getsource(KeyStore._from_redis)


def test_prompts_and_keys_never_reach_logs_or_metric_labels(stack: Stack) -> None:
    gw = stack.gateway
    for key in (CLIENT_KEY, REDIS_KEY):
        for stream in (False, True):
            body = {
                "model": "sim-model",
                "messages": [{"role": "user", "content": PROMPT}],
                "stream": stream,
                "temperature": 0,
            }
            assert _post(stack, body, key).status_code == 200
            assert _post(stack, body, key).status_code == 200  # a cache hit too
    _post(stack, {"model": "sim-model", "messages": [{"role": "user", "content": PROMPT}]}, WRONG_KEY)
    _post(
        stack,
        {
            "model": "sim-model",
            "messages": [{"role": "user", "content": PROMPT}],
            "sim": {"fault": "error", "status": 500},
        },
    )
    _post(
        stack,
        {
            "model": "sim-model",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "sim": {"fault": "malformed_json", "after_chunks": 1},
        },
    )
    for mode in ECHO_MODES:
        _post(stack, {"model": "echo-model", "messages": [{"role": "user", "content": PROMPT}], "echo": mode})
    _post(stack, {"model": "no-such-model", "messages": [{"role": "user", "content": PROMPT}]})
    _post(stack, {"model": "sim-model", "messages": [{"role": "user", "content": PROMPT}], "temperature": 9})
    metrics = httpx.get(gw.url + "/metrics").text
    log = stack.log.read_text()
    assert "DEBUG" in log  # the gateway really logged at debug level
    for what, secret in SECRETS.items():
        assert secret not in metrics, f"{what} in /metrics"
        assert secret not in log, f"{what} in the log"
    for tenant in ("alpha", "held-in-redis"):
        assert f'"{tenant}"' not in metrics, f"tenant {tenant} as a metric label"
