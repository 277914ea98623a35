"""Spans of a request through the in-process gateway, exported for real to an OTLP receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.in_process import in_process_gateway
from tests.support.otlp import OTLPReceiver
from tests.support.scripted import ScriptedTransport, stream

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "switchyard-test")
        yield r


async def test_a_streamed_request_is_one_trace_that_continues_the_clients(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    upstream = ScriptedTransport("a", [stream("Hello", " there")])
    async with in_process_gateway([upstream], tmp_path) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=abc"},
        )
        assert response.status_code == 200
        assert response.headers["traceresponse"].startswith(f"00-{CLIENT_TRACE}-")
    spans = receiver.wait_for_trace(CLIENT_TRACE, {"POST /v1/chat/completions", "chat m"})
    by_name = {s["name"]: s for s in spans}
    server = by_name["POST /v1/chat/completions"]
    assert server["parent_span_id"] == CLIENT_SPAN
    assert server["kind"] == 2
    assert server["resource"]["service.name"] == "switchyard-test"
    assert server["attributes"]["gen_ai.request.model"] == "m"
    attempt = by_name["chat m"]
    assert attempt["parent_span_id"] == server["span_id"]
    assert attempt["attributes"]["switchyard.attempt.outcome"] == "ok"
    sent = upstream.played[0].call.headers
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{attempt['span_id']}-01"
    assert sent["tracestate"] == "vendor=abc"


async def test_latency_histograms_carry_trace_ids_as_exemplars_in_openmetrics(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    async with in_process_gateway([ScriptedTransport("a", [stream("Hi")])], tmp_path) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        )
        trace_id = response.headers["traceresponse"].split("-")[1]
        scraped = await client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert scraped.headers["content-type"].startswith("application/openmetrics-text")
        exemplars = [line for line in scraped.text.splitlines() if f'# {{trace_id="{trace_id}"}}' in line]
        names = {line.split("{")[0] for line in exemplars}
        assert {"switchyard_request_duration_seconds_bucket", "switchyard_time_to_first_token_seconds_bucket"} <= names
        plain = await client.get("/metrics")
        assert plain.headers["content-type"].startswith("text/plain") and "trace_id" not in plain.text


async def test_with_tracing_off_nothing_is_recorded_and_the_clients_context_passes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    upstream = ScriptedTransport("a", [stream("Hi")])
    async with in_process_gateway([upstream], tmp_path) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
        )
        assert response.status_code == 200 and "traceresponse" not in response.headers
    assert upstream.played[0].call.headers == {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}


async def test_recorded_content_is_redacted_of_keys(receiver: OTLPReceiver, tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdefghij"
    upstream = ScriptedTransport("a", [stream("Your key ", secret, " is safe")])
    config = {"tracing": {"record_content": True}}
    async with in_process_gateway([upstream], tmp_path, config) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": f"remember {secret} please"}]},
        )
        trace_id = response.headers["traceresponse"].split("-")[1]
    (server,) = [s for s in receiver.wait_for_trace(trace_id, {"POST /v1/chat/completions"}) if s["kind"] == 2]
    prompt, answer = server["attributes"]["gen_ai.input.messages"], server["attributes"]["gen_ai.output.messages"]
    assert "remember [REDACTED] please" in prompt and "Your key [REDACTED] is safe" in answer
    assert secret not in json.dumps(receiver.spans)
