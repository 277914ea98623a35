"""The edge, the pipeline and its stages, in process over scripted upstreams: what a client sees for
each path through them (answers, streams, refusals in the OpenAI error shape, cache hits, limits,
drain), without starting a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.auth import hash_key
from tests.support.in_process import in_process_gateway
from tests.support.scripted import ScriptedTransport, status, stream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def upstream(name: str = "a", *scripts: Any) -> ScriptedTransport:
    return ScriptedTransport(name, list(scripts) or [stream("Hello", " there")])


def sse_data(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


async def test_a_plain_answer_carries_the_request_id_and_the_cache_verdict(tmp_path: Path) -> None:
    async with in_process_gateway([upstream()], tmp_path) as client:
        response = await client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-switchyard-cache"] in ("miss", "bypass")
    assert response.json()["choices"][0]["message"]["content"] == "Hello there"


async def test_a_stream_is_relayed_event_by_event_and_ends_with_done(tmp_path: Path) -> None:
    a = upstream()
    async with in_process_gateway([a], tmp_path) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.content)
    assert events[-1] == b"[DONE]"
    text = "".join(
        (orjson.loads(e)["choices"][0]["delta"].get("content") or "") for e in events[:-1] if orjson.loads(e)["choices"]
    )
    assert text == "Hello there"
    # The gateway asked for usage on its own behalf, and did not pass that chunk on unasked.
    assert a.played[0].call.body["stream_options"] == {"include_usage": True}
    assert all(orjson.loads(e).get("usage") is None for e in events[:-1])


async def test_the_second_identical_deterministic_request_is_an_exact_cache_hit(tmp_path: Path) -> None:
    a = upstream()
    body = {**CHAT, "temperature": 0}
    async with in_process_gateway([a], tmp_path) as client:
        first = await client.post("/v1/chat/completions", json=body)
        second = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert first.headers["x-switchyard-cache"] == "miss"
    assert second.headers["x-switchyard-cache"] == "exact"
    assert len(a.played) == 1  # the hit never reached the upstream
    replayed = b"".join(
        orjson.loads(e)["choices"][0]["delta"].get("content", "").encode()
        for e in sse_data(second.content)[:-1]
        if orjson.loads(e)["choices"]
    )
    assert replayed == b"Hello there"  # replayed as a real stream


@pytest.mark.parametrize(
    ("body", "status_", "param"),
    [
        (b"{not json", 400, None),
        (orjson.dumps({"messages": []}), 400, "model"),
        (orjson.dumps({**CHAT, "temperature": 9}), 400, "temperature"),
        (orjson.dumps({**CHAT, "stream": "yes"}), 400, "stream"),
        (orjson.dumps({**CHAT, "model": "nope"}), 404, "model"),
    ],
)
async def test_bad_requests_get_the_openai_error_shape_naming_the_parameter(
    tmp_path: Path, body: bytes, status_: int, param: str | None
) -> None:
    async with in_process_gateway([upstream()], tmp_path) as client:
        response = await client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        after = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status_
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert after.status_code == 200  # and the gateway keeps serving


async def test_an_upstream_refusal_before_the_first_byte_is_an_http_error(tmp_path: Path) -> None:
    async with in_process_gateway([upstream("a", [status(503)])], tmp_path, {"resilience": {"retries": 0}}) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


async def test_keys_are_required_and_checked(tmp_path: Path) -> None:
    config = {"auth": {"mode": "keys", "keys": [{"sha256": hash_key("sk-good"), "tenant": "t1"}]}}
    async with in_process_gateway([upstream()], tmp_path, config) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT)
        wrong = await client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-bad"})
        good = await client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-good"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert good.status_code == 200


async def test_a_tenant_over_its_request_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    config = {"auth": {"mode": "keys", "keys": [{"sha256": hash_key("sk-1"), "tenant": "t1", "rpm": 1}]}}
    auth = {"authorization": "Bearer sk-1"}
    async with in_process_gateway([upstream()], tmp_path, config) as client:
        first = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        second = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["type"] == "rate_limit_error"


async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path) -> None:
    config = {"server": {"max_body_bytes": 2048}}
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    async with in_process_gateway([upstream()], tmp_path, config) as client:
        response = await client.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_while_draining_new_api_requests_get_503_with_retry_after(tmp_path: Path) -> None:
    async with in_process_gateway([upstream()], tmp_path) as client:
        transport = client._transport
        assert hasattr(transport, "app")
        transport.app.drain.draining = True
        response = await client.post("/v1/chat/completions", json=CHAT)
        health = await client.get("/healthz")
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert health.status_code == 200  # liveness is not the API


async def test_unknown_paths_and_methods_get_the_openai_error_shape(tmp_path: Path) -> None:
    async with in_process_gateway([upstream()], tmp_path) as client:
        unknown = await client.post("/v1/nothing-here", json=CHAT)
        wrong_method = await client.get("/v1/chat/completions")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert set(wrong_method.json()["error"]) == {"message", "type", "param", "code"}


async def test_the_openapi_description_is_generated_from_the_route_table(tmp_path: Path) -> None:
    from gateway.routes import API_ROUTES

    async with in_process_gateway([upstream()], tmp_path) as client:
        document = (await client.get("/openapi.json")).json()
    for route in API_ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "model" in schema["properties"]
    assert "/v1/models" in document["paths"]
