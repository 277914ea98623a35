"""The soak benchmark: a smoke run of the full mix against a real stack, ending with its JSON
summary (the long run is `python -m bench.soak`, 30 minutes by default); and, without servers, how
the driver reads each API's answers and how the mix chains stored responses."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import httpx
import orjson
import pytest

from bench.soak import growth
from bench.soak.drive import send
from bench.soak.workload import KEYS, MAX_CHAIN, Mix, Request, Stored
from tests.support.processes import REPO

KINDS = {
    "cacheable",
    "chat",
    "tools",
    "engine",
    "completions",
    "embeddings",
    "abandoned",
    "fault",
    "responses",
    "chained",
    "retrieve",
    "messages",
}


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.redis
def test_a_short_soak_serves_the_whole_mix_and_reports_memory_latency_and_traces() -> None:
    # A TTL of a few seconds: stored responses expire within the run, and their 404s are expected.
    command = ["--minutes", "0.4", "--rps", "12", "--sample-seconds", "1", "--responses-ttl", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["requests"] > 100
    assert set(summary["by_kind"]) == KINDS
    assert summary["unexpected_errors"] == 0, summary["unexpected_examples"]
    for kind in KINDS - {"abandoned", "fault"}:
        assert summary["by_kind"][kind].get("ok", 0) > 0, kind
    assert sum(summary["by_kind"][k].get("expired", 0) for k in ("chained", "retrieve")) > 0
    # Clear errors, as asked for: the backend's, or its open circuit's.
    assert set(summary["by_kind"]["fault"]) <= {"error_status:502", "error_status:503", "error_event"}
    gateway = summary["gateway"]
    assert gateway["cache_hits"] > 0 and gateway["router_narrowed"] > 0 and gateway["client_cancellations"] > 0
    memory = summary["memory_gateway"]
    assert 0 < memory["start_mb"] <= memory["max_mb"] and isinstance(memory["growth_pct_per_hour"], float)
    assert summary["latency"]["p99_first_s"] > 0 and summary["latency"]["p99_drift"] is not None
    assert summary["latency"]["by_kind"]["messages"]["p50_s"] > 0
    traces = summary["traces"]
    assert traces["spans_exported"] > 0 and not any(traces["spans_dropped"].values())
    assert traces["spans_received"] >= traces["spans_exported"]


def test_growth_is_the_post_warm_up_slope_per_hour() -> None:
    flat = [(t, 100.0) for t in range(0, 600, 10)]
    assert growth(flat, 60)["growth_pct_per_hour"] == 0.0
    # Warm-up climbs to 100 MB, then 1 MB a minute: 60 MB an hour, 60 % of the post-warm-up start.
    rising = [(t, 50.0 + t) if t < 50 else (t, 100.0 + (t - 60) / 60) for t in range(0, 3600, 10)]
    out = growth(rising, 60)
    assert out["slope_mb_per_hour"] == pytest.approx(60.0, rel=0.01)
    assert out["growth_pct_per_hour"] == pytest.approx(60.0 * 100 / out["start_mb"], rel=0.01)
    assert out["max_mb"] == pytest.approx(max(m for _, m in rising), abs=0.05)


# -- reading answers ------------------------------------------------------------------------------


def _sse(*events: tuple[str | None, object]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"
    return out


def _client(status: int, body: bytes, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": []}
STREAMS: list[tuple[str, bytes, tuple[str, str | None]]] = [
    (
        "/v1/responses",
        _sse(
            ("response.created", {"response": {"id": "resp_1"}}),
            ("response.output_text.delta", {"delta": "hi"}),
            ("response.completed", {"response": RESPONSE}),
        ),
        ("ok", "resp_1"),
    ),
    (
        "/v1/responses",
        _sse(("response.incomplete", {"response": {**RESPONSE, "status": "incomplete"}})),
        ("ok", "resp_1"),
    ),
    ("/v1/responses", _sse(("response.created", {}), ("response.failed", {"response": {}})), ("error_event", None)),
    ("/v1/responses", _sse(("response.created", {}), ("error", {"message": "x"})), ("error_event", None)),
    ("/v1/responses", _sse(("response.created", {}), ("response.output_text.delta", {})), ("truncated", None)),
    ("/v1/messages", _sse(("message_start", {}), ("content_block_delta", {}), ("message_stop", {})), ("ok", None)),
    ("/v1/messages", _sse(("message_start", {}), ("error", {"type": "error"})), ("error_event", None)),
    ("/v1/messages", _sse(("message_start", {}), ("message_delta", {})), ("truncated", None)),
    ("/v1/chat/completions", _sse((None, {"choices": []}), (None, b"[DONE]")), ("ok", None)),
    ("/v1/chat/completions", _sse((None, {"choices": []}), (None, {"error": {"message": "x"}})), ("error_event", None)),
]


@pytest.mark.parametrize(("path", "body", "expected"), STREAMS)
async def test_streams_end_well_only_with_their_api_s_last_event(
    path: str, body: bytes, expected: tuple[str, str | None]
) -> None:
    seen: list[httpx.Request] = []
    async with _client(200, body, seen) as client:
        assert await send(client, "http://gw", Request("k", path, {"model": "m"}, True, "soak-a"), 5) == expected
    assert orjson.loads(seen[0].content)["stream"] is True


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/v1/responses", RESPONSE, ("ok", "resp_1")),
        ("/v1/responses", {**RESPONSE, "status": "failed"}, ("malformed", None)),
        ("/v1/messages", {"type": "message", "content": [{"type": "text", "text": "hi"}]}, ("ok", None)),
        ("/v1/messages", {"type": "message"}, ("malformed", None)),
        ("/v1/chat/completions", {"choices": []}, ("ok", None)),
    ],
)
async def test_whole_answers_are_recognised_by_api(
    path: str, payload: dict[str, object], expected: tuple[str, str | None]
) -> None:
    async with _client(200, orjson.dumps(payload), []) as client:
        assert await send(client, "http://gw", Request("k", path, {"model": "m"}, False, "soak-a"), 5) == expected


async def test_messages_send_the_key_as_x_api_key_and_errors_keep_their_message() -> None:
    seen: list[httpx.Request] = []
    error = {"type": "error", "error": {"type": "not_found_error", "message": "no such model"}}
    async with _client(404, orjson.dumps(error), seen) as client:
        result = await send(client, "http://gw", Request("k", "/v1/messages", {}, False, "soak-b"), 5)
    assert result == ("error_status:404:no such model", None)
    assert seen[0].headers["x-api-key"] == KEYS["soak-b"] and "authorization" not in seen[0].headers


async def test_a_retrieve_is_a_get_of_a_stored_response() -> None:
    seen: list[httpx.Request] = []
    async with _client(200, orjson.dumps(RESPONSE), seen) as client:
        result = await send(client, "http://gw", Request("retrieve", "/v1/responses/resp_1", None, False, "soak-a"), 5)
    assert result == ("ok", None)
    assert seen[0].method == "GET" and seen[0].headers["authorization"] == f"Bearer {KEYS['soak-a']}"


# -- the mix --------------------------------------------------------------------------------------


def _draws(mix: Mix, n: int, before: Callable[[Mix, int], None] = lambda m, i: None) -> list[Request]:
    out = []
    for i in range(n):
        before(mix, i)
        out.append(mix.next())
    return out


def test_the_mix_chains_only_to_its_own_tenant_s_responses_and_its_draws_do_not_depend_on_them() -> None:
    def answer(mix: Mix, i: int) -> None:  # every tenant has stored responses, some at the last turn
        for tenant in KEYS:
            mix.remember(tenant, Stored(f"resp_{tenant}_{i}", 1 + i % MAX_CHAIN, float(i)))

    fresh, fed = _draws(Mix(3), 3000), _draws(Mix(3), 3000, answer)
    assert {r.kind for r in fresh} == {r.kind for r in fed} - {"chained", "retrieve"}
    for a, b in zip(fresh, fed, strict=True):
        assert a.tenant == b.tenant
        if b.kind in ("chained", "retrieve"):
            assert a.kind == "responses"  # nothing to chain to or retrieve yet
            stored = b.body["previous_response_id"] if b.body else b.path.rsplit("/", 1)[1]
            assert stored.startswith(f"resp_{b.tenant}_")
            assert b.refers_to is not None
        else:
            assert (a.kind, a.body, a.stream) == (b.kind, b.body, b.stream)
    chained = [r for r in fed if r.kind == "chained"]
    assert chained and all(2 <= r.turn <= MAX_CHAIN for r in chained)
    share = sum(r.kind in ("responses", "chained") for r in fed) / len(fed)
    assert share == pytest.approx(12 / 122, abs=0.02)


def test_a_vllm_model_adds_its_kinds_to_the_mix() -> None:
    kinds = {r.kind for r in _draws(Mix(5, vllm_model="smol"), 2000)}
    assert {"vllm", "vllm_responses", "vllm_messages"} <= kinds
    assert not {"vllm", "vllm_responses", "vllm_messages"} & {r.kind for r in _draws(Mix(5), 2000)}
