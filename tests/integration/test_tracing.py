"""Traces and the request log, end to end: a gateway process exporting for real (OTLP/HTTP,
protobuf) to a receiver this test runs, in front of `switchyard sim` backends."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.otlp import OTLPReceiver, SilentCollector, assert_nowhere, log_lines
from tests.support.processes import ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim, wait_for

KEY = "sk-trace-test-0123456789abcdef"
PROMPT = "Which umbrella should the lighthouse keeper in Reykjavik buy"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
MODEL = "sim-model"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')}",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for name in (
        "get_weather",
        "book_flight",
        "send_email",
        "search_web",
        "play_music",
        "set_alarm",
        "order_food",
        "translate_text",
    )
]


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "switchyard-it",
        **extra,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_sim(
        "--models",
        MODEL,
        "--ttft-ms",
        "5",
        "--itl-ms",
        "2",
        "--output-tokens",
        "12",
        "--seed",
        "3",
        log_dir=tmp_path_factory.mktemp("sim"),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def full_stack(
    receiver: OTLPReceiver, sim: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    """Every stage on: keys with limits, the exact cache, the tool router (it loads the embedder)."""
    tmp = tmp_path_factory.mktemp("gw")
    log = tmp / "requests.jsonl"
    config = {
        "auth": {
            "keys": [
                {"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "acme", "rpm": 1000, "tpm": 1_000_000}
            ]
        },
        "cache": {"semantic": False},
        "router": {"enabled": True, "threshold": 4},
        "request_log": {"enabled": True, "path": str(log)},
        "backends": [sim_backend("sim-a", sim, models=[MODEL])],
    }
    gw = start_gateway(config, tmp, env=_env(receiver.endpoint), lean=False, timeout=180)
    yield gw, log
    gw.stop()


def test_a_request_through_every_stage_is_one_trace_with_genai_attributes(
    full_stack: tuple[ServerProcess, Path], receiver: OTLPReceiver, sim: ServerProcess
) -> None:
    gw, log = full_stack
    body = {
        "model": MODEL,
        "stream": True,
        "temperature": 0,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    headers = {
        "authorization": f"Bearer {KEY}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        "tracestate": "congo=t61rcWkgMzE",
    }
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        assert "".join(r.iter_text()).rstrip().endswith("[DONE]")
        assert r.headers["traceresponse"].startswith(f"00-{CLIENT_TRACE}-")
    names = {
        "POST /v1/chat/completions",
        "switchyard.auth",
        "switchyard.admission",
        "switchyard.cache",
        "switchyard.tools",
        "switchyard.route",
        f"chat {MODEL}",
    }
    spans = receiver.wait_for_trace(CLIENT_TRACE, names)
    by_name = {s["name"]: s for s in spans}
    server, attempt = by_name["POST /v1/chat/completions"], by_name[f"chat {MODEL}"]
    assert {s["trace_id"] for s in spans} == {CLIENT_TRACE}
    assert server["parent_span_id"] == CLIENT_SPAN and server["kind"] == 2
    assert server["trace_state"] == "congo=t61rcWkgMzE"
    for name in names - {"POST /v1/chat/completions"}:
        assert by_name[name]["parent_span_id"] == server["span_id"], name
    a = server["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] in (["stop"], ["tool_calls"], ["length"])
    assert a["switchyard.tenant"] == "acme" and a["http.response.status_code"] == 200
    assert by_name["switchyard.auth"]["attributes"]["switchyard.tenant"] == "acme"
    assert by_name["switchyard.cache"]["attributes"]["switchyard.cache.verdict"] in ("miss", "bypass")
    tools = by_name["switchyard.tools"]["attributes"]
    assert tools["switchyard.tools.in"] == len(TOOLS) and 1 <= tools["switchyard.tools.out"] <= len(TOOLS)
    route = by_name["switchyard.route"]["attributes"]
    assert route["switchyard.route.candidates"] == ["sim-a"] and route["switchyard.route.chosen"] == "sim-a"
    assert len(route["switchyard.route.predicted_ttft_s"]) == 1
    at = attempt["attributes"]
    assert attempt["kind"] == 3
    assert at["gen_ai.request.model"] == MODEL and at["gen_ai.response.model"] == MODEL
    assert at["server.address"] == "127.0.0.1" and at["server.port"] == sim.port
    assert at["switchyard.attempt.outcome"] == "ok" and at["gen_ai.usage.output_tokens"] > 0
    assert [e["name"] for e in attempt["events"]] == ["gen_ai.first_token"]
    assert attempt["start"] <= attempt["events"][0]["time"] <= attempt["end"]
    # The upstream saw the same trace, its parent being this attempt's span.
    seen = SimControl(sim).last_request()["headers"]
    assert seen["traceparent"] == f"00-{CLIENT_TRACE}-{attempt['span_id']}-01"
    assert seen["tracestate"] == "congo=t61rcWkgMzE"
    wait_for(lambda: any(line["trace_id"] == CLIENT_TRACE for line in log_lines(log)), what="the log line")
    (line,) = [line for line in log_lines(log) if line["trace_id"] == CLIENT_TRACE]
    assert line["tenant"] == "acme" and line["model"] == MODEL and line["backend"] == "sim-a"
    assert line["status"] == 200 and line["cache"] in ("miss", "bypass") and line["tools_in"] == len(TOOLS)
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0 and line["ttft_s"] > 0
    assert line["hedges"] == 0 and line["retries"] == 0 and line["request_id"]
    assert_nowhere((KEY, PROMPT), receiver, log.read_text())


def test_a_stream_the_client_cuts_still_ends_its_spans_and_its_log_line(
    full_stack: tuple[ServerProcess, Path], receiver: OTLPReceiver, sim: ServerProcess
) -> None:
    gw, log = full_stack
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": PROMPT}],
        "sim": {"output_tokens": 400, "itl_ms": 20},
    }
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30
    ) as r:
        trace_id = r.headers["traceresponse"].split("-")[1]
        next(r.iter_bytes())  # the first chunk, then the client goes away
    spans = receiver.wait_for_trace(trace_id, {"POST /v1/chat/completions", f"chat {MODEL}"})
    by_name = {s["name"]: s for s in spans}
    assert by_name[f"chat {MODEL}"]["attributes"]["switchyard.attempt.outcome"] == "cancelled"
    assert by_name["POST /v1/chat/completions"]["attributes"]["switchyard.cancelled"] is True
    wait_for(lambda: any(line["trace_id"] == trace_id for line in log_lines(log)), what="the log line")
    (line,) = [line for line in log_lines(log) if line["trace_id"] == trace_id]
    assert line["status"] == 499 and line["cancelled"] is True
    assert_nowhere((KEY, PROMPT), receiver, log.read_text())


def test_a_hedged_request_shows_both_attempts(receiver: OTLPReceiver, tmp_path: Path) -> None:
    slow = start_sim("--models", MODEL, "--ttft-ms", "1500", "--output-tokens", "4", log_dir=tmp_path, name="slow")
    fast = start_sim("--models", MODEL, "--ttft-ms", "5", "--output-tokens", "4", log_dir=tmp_path, name="fast")
    config = {
        "auth": {"mode": "none"},
        "relay": {"balancer": "least_outstanding", "first_token_deadline": 0.2, "hedge_budget": 1.0},
        # The slow backend's weight makes it the first choice; the hedge goes to the fast one.
        "backends": [sim_backend("slow", slow, models=[MODEL], weight=100), sim_backend("fast", fast, models=[MODEL])],
    }
    gw = start_gateway(config, tmp_path, env=_env(receiver.endpoint))
    try:
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hedge me"}]}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            r.read()
            trace_id = r.headers["traceresponse"].split("-")[1]
        spans = receiver.wait_for_trace(trace_id, {"POST /v1/chat/completions", f"chat {MODEL}"})
        receiver.wait_for(
            lambda s: sum(x["name"] == f"chat {MODEL}" for x in s if x["trace_id"] == trace_id) == 2,
            what="both attempts",
        )
        spans = receiver.trace(trace_id)
        attempts = {s["attributes"]["switchyard.backend"]: s for s in spans if s["name"] == f"chat {MODEL}"}
        assert attempts["slow"]["attributes"]["switchyard.attempt.hedge"] is False
        assert attempts["slow"]["attributes"]["switchyard.attempt.outcome"] == "lost"
        assert attempts["fast"]["attributes"]["switchyard.attempt.hedge"] is True
        assert attempts["fast"]["attributes"]["switchyard.attempt.outcome"] == "ok"
        assert attempts["slow"]["span_id"] != attempts["fast"]["span_id"]
        server = next(s for s in spans if s["name"] == "POST /v1/chat/completions")
        assert server["attributes"]["switchyard.hedges"] == 1
        routes = [s for s in spans if s["name"] == "switchyard.route"]
        assert any(s["attributes"].get("switchyard.route.hedge") for s in routes)
        # Each backend got its own attempt's span as the parent.
        for name, proc in (("slow", slow), ("fast", fast)):
            seen = SimControl(proc).last_request()["headers"]["traceparent"]
            assert seen == f"00-{trace_id}-{attempts[name]['span_id']}-01"
    finally:
        gw.stop()
        slow.stop()
        fast.stop()


def test_a_collector_that_is_down_slows_nothing_and_drops_are_counted(sim: ServerProcess, tmp_path: Path) -> None:
    collector = SilentCollector()  # every export waits its whole timeout
    env = _env(collector.endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="5", OTEL_BSP_MAX_QUEUE_SIZE="32")
    gw = start_gateway(
        {"auth": {"mode": "none"}, "backends": [sim_backend("sim-a", sim, models=[MODEL])]}, tmp_path, env=env
    )
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
        took = []
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            for _ in range(60):
                started = time.perf_counter()
                assert client.post("/v1/chat/completions", json=body).status_code == 200
                took.append(time.perf_counter() - started)
            # Exports block for 5 s each; no request waited for one.
            assert max(took) < 2.0, max(took)
            wait_for(
                lambda: (
                    metric_value(
                        client.get("/metrics").text, "switchyard_trace_spans_dropped_total", reason="queue_full"
                    )
                    > 0
                ),
                what="dropped spans counted",
            )
    finally:
        gw.stop()
        collector.close()
