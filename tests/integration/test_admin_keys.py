"""Keys managed at run time through the admin API, seen by two gateway replicas sharing a real Redis."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.auth import hash_key
from tests.support.processes import RedisServer, ServerProcess, switchyard_command
from tests.support.stack import sim_backend, start_gateway, start_sim, wait_for

pytestmark = pytest.mark.redis

ADMIN_KEY = "sk-admin-test-only"
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Replicas:
    redis: RedisServer
    sim: ServerProcess
    one: ServerProcess
    two: ServerProcess

    def admin(self, gateway: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, gateway.url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10, **kw
        )


def replica_config(redis: RedisServer, sim: ServerProcess, **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"mode": "keys"},
        "admin": {"key_sha256": hash_key(ADMIN_KEY)},
        "redis": {"url": redis.url},
        "backends": [sim_backend("sim", sim, models=["sim-model", "other-model"])],
        **extra,
    }


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("admin")
    redis = RedisServer().start()
    sim = start_sim("--output-tokens", "3", log_dir=tmp)
    one = two = None
    try:
        config = replica_config(redis, sim)
        one = start_gateway(config, tmp, name="one")
        two = start_gateway(config, tmp, name="two")
        yield Replicas(redis, sim, one, two)
    finally:
        for proc in (one, two, sim):
            if proc is not None:
                proc.stop()
        redis.stop()


def _chat(gateway: ServerProcess, key: str, model: str = "sim-model") -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "max_tokens": 3, "messages": HI},
        timeout=10,
    )


def test_a_key_created_on_one_replica_works_on_the_other(replicas: Replicas) -> None:
    created = replicas.admin(replicas.one, "POST", "/admin/keys", json={"tenant": "acme", "team": "search"})
    assert created.status_code == 201, created.text
    record = created.json()
    secret = record["key"]
    assert secret.startswith("sk-sy-") and record["tenant"] == "acme" and record["team"] == "search"
    assert "sha256" not in record
    with openai.OpenAI(base_url=replicas.two.url + "/v1", api_key=secret, max_retries=0) as client:
        answer = client.chat.completions.create(model="sim-model", messages=HI, max_tokens=3)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    # Shown once: the listing and the key's own page carry neither the secret nor its digest.
    listing = replicas.admin(replicas.two, "GET", "/admin/keys", params={"tenant": "acme"}).json()
    assert [k["id"] for k in listing["data"]] == [record["id"]]
    shown = replicas.admin(replicas.two, "GET", f"/admin/keys/{record['id']}").json()
    for page in (json.dumps(listing), json.dumps(shown)):
        assert secret not in page and hash_key(secret) not in page
    # Redis holds the digest, never the key.
    import redis as redis_sync

    with redis_sync.Redis.from_url(replicas.redis.url) as r:
        assert r.exists(f"switchyard:key:{hash_key(secret)}")
        assert all(secret.encode() not in (r.get(n) or b"") for n in r.scan_iter("switchyard:key:*"))


def test_a_revoked_key_is_refused_by_both_replicas_within_a_second(replicas: Replicas) -> None:
    created = replicas.admin(replicas.one, "POST", "/admin/keys", json={"tenant": "acme"}).json()
    secret, key_id = created["key"], created["id"]
    for gw in (replicas.one, replicas.two):  # both replicas know (and cache) the key
        assert _chat(gw, secret).status_code == 200
    revoked = replicas.admin(replicas.two, "DELETE", f"/admin/keys/{key_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    at = time.monotonic()
    refused_after: dict[str, float] = {}
    while len(refused_after) < 2 and time.monotonic() - at < 3.0:
        for name, gw in (("one", replicas.one), ("two", replicas.two)):
            if name not in refused_after and _chat(gw, secret).status_code == 401:
                refused_after[name] = time.monotonic() - at
    assert set(refused_after) == {"one", "two"}
    assert max(refused_after.values()) < 1.0, refused_after
    for gw in (replicas.one, replicas.two):  # and it stays refused
        refused = _chat(gw, secret)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert replicas.admin(replicas.one, "DELETE", f"/admin/keys/{key_id}").status_code == 404


def test_rotation_expiry_and_models_allowed(replicas: Replicas) -> None:
    created = replicas.admin(
        replicas.one, "POST", "/admin/keys", json={"tenant": "beta", "models": ["sim-model"], "rpm": 100}
    ).json()
    old = created["key"]
    assert _chat(replicas.two, old).status_code == 200
    denied = _chat(replicas.two, old, model="other-model")
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "model"
    rotated = replicas.admin(replicas.one, "POST", f"/admin/keys/{created['id']}/rotate")
    assert rotated.status_code == 200
    new = rotated.json()["key"]
    assert new != old and rotated.json()["id"] == created["id"]
    assert _chat(replicas.two, new).status_code == 200
    wait_for(lambda: _chat(replicas.two, old).status_code == 401, timeout=1.0, what="the old secret refused")
    # A key with an expiry stops on its own.
    short = replicas.admin(replicas.one, "POST", "/admin/keys", json={"tenant": "beta", "expires_in_seconds": 1.5})
    expiring = short.json()["key"]
    assert _chat(replicas.one, expiring).status_code == 200
    wait_for(lambda: _chat(replicas.two, expiring).status_code == 401, timeout=5.0, what="the key expired")
    assert "expired" in _chat(replicas.one, expiring).json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "tenant"),
        ({"tenant": "has spaces"}, "tenant"),
        ({"tenant": "t", "rpm": 0}, "rpm"),
        ({"tenant": "t", "colour": "red"}, "colour"),
        ({"tenant": "t", "budget": {"amount_usd": -1}}, "budget.amount_usd"),
        ({"tenant": "t", "budget": {"amount_usd": 1, "period": "hourly"}}, "budget.period"),
        ({"tenant": "t", "expires_at": 1000.0}, None),
        ({"tenant": "t", "models": []}, "models"),
    ],
)
def test_bad_admin_input_gets_a_clear_400(replicas: Replicas, body: dict[str, Any], param: str | None) -> None:
    answer = replicas.admin(replicas.one, "POST", "/admin/keys", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_admin_api_answers_only_to_the_admin_key(replicas: Replicas) -> None:
    tenant_key = replicas.admin(replicas.one, "POST", "/admin/keys", json={"tenant": "gamma"}).json()["key"]
    for headers in ({}, {"authorization": f"Bearer {tenant_key}"}, {"authorization": "Bearer nope"}):
        answer = httpx.get(replicas.one.url + "/admin/keys", headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    not_json = replicas.admin(replicas.one, "POST", "/admin/keys", content=b"{nope")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    assert replicas.admin(replicas.one, "POST", "/admin/keys/key_missing/rotate").status_code == 404
    assert replicas.admin(replicas.one, "GET", "/admin/tenants/bad name").status_code == 400
    budget = replicas.admin(replicas.one, "PUT", "/admin/tenants/gamma/budget", json={"amount_usd": "lots"})
    assert budget.status_code == 400 and budget.json()["error"]["param"] == "amount_usd"
    assert _chat(replicas.one, tenant_key).status_code == 200  # and the gateway keeps serving


def test_admin_api_is_off_unless_configured(tmp_path: Path, replicas: Replicas) -> None:
    config = {"auth": {"redis_keys": True}, "redis": {"url": replicas.redis.url},
              "backends": [sim_backend("sim", replicas.sim, models=["sim-model"])]}  # fmt: skip
    gw = start_gateway(config, tmp_path, name="no-admin")
    try:
        answer = httpx.get(gw.url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    finally:
        gw.stop()


def test_the_cli_wraps_the_admin_api(replicas: Replicas) -> None:
    env = {"SWITCHYARD_ADMIN_URL": replicas.one.url, "SWITCHYARD_ADMIN_KEY": ADMIN_KEY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run(
            switchyard_command(*args), capture_output=True, text=True, timeout=60, env={**os.environ, **env}
        )

    made = cli("keys", "create", "--tenant", "delta", "--team", "ml", "--budget", "5", "--period", "daily",
               "--models", "sim-model", "--expires-in", "30d")  # fmt: skip
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert record["budget"] == {"amount_usd": 5.0, "period": "daily"} and record["models"] == ["sim-model"]
    assert record["expires_at"] > time.time() + 29 * 86400
    assert _chat(replicas.two, record["key"]).status_code == 200
    listed = json.loads(cli("keys", "list", "--tenant", "delta").stdout)
    assert [k["id"] for k in listed["data"]] == [record["id"]]
    assert cli("budgets", "set", "--tenant", "delta", "--team", "ml", "--amount", "2").returncode == 0
    team = json.loads(cli("budgets", "show", "--tenant", "delta", "--team", "ml").stdout)
    assert team["budget"] == {"amount_usd": 2.0, "period": "monthly"}
    assert cli("keys", "revoke", record["id"]).returncode == 0
    wait_for(lambda: _chat(replicas.two, record["key"]).status_code == 401, timeout=1.0, what="revoked")
    missing = cli("keys", "revoke", record["id"])
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = cli("keys", "create", "--tenant", "no spaces allowed")
    assert bad.returncode == 1 and "tenant" in bad.stderr
