"""The telemetry pieces on their own: trace context, sampling, configuration, redaction, request
records, the request log, and trace context on the wire of both upstream HTTP paths."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from gateway.dialect import CHAT
from gateway.telemetry.config import tracing_config
from gateway.telemetry.propagation import format_traceparent, parse_traceparent, passthrough
from gateway.telemetry.redact import REDACTED, Redactor
from gateway.telemetry.request_log import RequestLog
from gateway.telemetry.sampling import Sampler
from gateway.telemetry.spans import NOOP_SPAN, RequestTrace
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.openai_http import OpenAIHTTPTransport

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", (int(TRACE, 16), int(SPAN, 16), True)),
        (f"00-{TRACE}-{SPAN}-00", (int(TRACE, 16), int(SPAN, 16), False)),
        (f"01-{TRACE}-{SPAN}-01-later-fields", (int(TRACE, 16), int(SPAN, 16), True)),  # a future version
        (f"00-{TRACE}-{SPAN}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{SPAN}-01", None),
        (f"00-{'0' * 32}-{SPAN}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_traceparent_is_read_as_w3c_says(header: str, expected: tuple[int, int, bool] | None) -> None:
    parent = parse_traceparent(header, "congo=t61rcWkgMzE")
    if expected is None:
        assert parent is None
        return
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == expected
    assert parent.tracestate == "congo=t61rcWkgMzE"
    assert format_traceparent(parent.trace_id, parent.span_id, parent.sampled).split("-")[1:3] == [TRACE, SPAN]


def test_an_oversized_tracestate_is_dropped_but_the_parent_kept() -> None:
    parent = parse_traceparent(f"00-{TRACE}-{SPAN}-01", "k=" + "v" * 600)
    assert parent is not None and parent.tracestate is None


def test_ratio_sampling_keeps_the_same_traces_as_the_sdk() -> None:
    ours, sdk = Sampler("traceidratio", 0.25), TraceIdRatioBased(0.25)
    for i in range(2000):
        trace_id = (i * 0x9E3779B97F4A7C15 * 7919) % (1 << 128) or 1
        kept = sdk.should_sample(None, trace_id, "x").decision is Decision.RECORD_AND_SAMPLE
        assert ours.decide(trace_id, None) is kept


def test_parent_based_samplers_follow_the_caller_and_the_others_do_not() -> None:
    sampled = parse_traceparent(f"00-{TRACE}-{SPAN}-01")
    unsampled = parse_traceparent(f"00-{TRACE}-{SPAN}-00")
    assert Sampler("parentbased_always_on").decide(1, unsampled) is False
    assert Sampler("parentbased_always_off").decide(1, sampled) is True
    assert Sampler("parentbased_always_off").decide(1, None) is False
    assert Sampler("always_on").decide(1, unsampled) is True
    assert Sampler("always_off").decide(1, sampled) is False
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER"):
        Sampler("jaeger_remote")


def test_tracing_is_off_unless_configured() -> None:
    assert not tracing_config({}).enabled
    assert not tracing_config({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}).enabled
    assert not tracing_config({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}).enabled


def test_the_standard_variables_say_where_spans_go() -> None:
    config = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert config.exporters == ("otlp",) and config.endpoint == "http://collector:4318/v1/traces"
    config = tracing_config(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}
    )
    assert config.endpoint == "http://c:9999/custom"
    config = tracing_config(
        {
            "OTEL_TRACES_EXPORTER": "console,otlp",
            "OTEL_SERVICE_NAME": "edge-gw",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_SCHEDULE_DELAY": "250",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000",
        }
    )
    assert config.exporters == ("console", "otlp") and config.endpoint == "http://localhost:4318/v1/traces"
    assert config.service_name == "edge-gw" and config.sampler.ratio == 0.1
    assert (config.max_queue, config.schedule_delay_s, config.max_batch) == (100, 0.25, 100)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "TRACES_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "SAMPLER_ARG",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ],
)
def test_unusable_variables_stop_the_start_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        tracing_config(environ)


def test_redaction_removes_keys_in_every_usual_shape() -> None:
    redact = Redactor(["upstream-secret-value"])
    text = (
        "openai sk-proj-abcdefghijklmnop1234 anthropic sk-ant-api03-abcdefghijklmnopqrstuv aws AKIAIOSFODNN7EXAMPLE "
        "github ghp_abcdefghijklmnopqrstuvwxyz0123 header Authorization: Bearer abc.def.ghi-123456 "
        'json {"api_key": "hunter2hunter2"} mine upstream-secret-value and the request own-key-123456'
    )
    out = redact(text, ("own-key-123456",))
    for secret in (
        "sk-proj-abcdefghijklmnop1234",
        "sk-ant-api03",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdef",
        "abc.def.ghi",
        "hunter2hunter2",
        "upstream-secret-value",
        "own-key-123456",
    ):
        assert secret not in out, secret
    assert REDACTED in out and "openai" in out and "the request" in out


def test_an_unsampled_trace_records_nothing_but_still_propagates() -> None:
    trace = RequestTrace(int(TRACE, 16), None, False)
    span = trace.span("anything")
    assert span is NOOP_SPAN and trace.spans == []
    span.set({"k": "v"})
    assert NOOP_SPAN.attributes == {}
    assert trace.upstream_headers(span)["traceparent"] == f"00-{TRACE}-{trace.server.span_id:016x}-00"


def test_a_gateway_that_only_logs_passes_the_clients_context_on_unchanged() -> None:
    parent = parse_traceparent(f"00-{TRACE}-{SPAN}-01", "a=b")
    trace = RequestTrace(int(TRACE, 16), parent, False, traced=False, log=True)
    assert trace.upstream_headers(trace.span("x")) == {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=b"}
    assert passthrough({"traceparent": f"00-{TRACE}-{SPAN}-01"}) == {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    assert passthrough({}) == {}


def test_a_sampled_trace_parents_each_upstream_attempt_on_its_own_span() -> None:
    trace = RequestTrace(int(TRACE, 16), parse_traceparent(f"00-{TRACE}-{SPAN}-01"), True)
    first, second = trace.span("a"), trace.span("b")
    assert first.parent_id == second.parent_id == trace.server.span_id and trace.server.parent_id == int(SPAN, 16)
    headers = {trace.upstream_headers(s)["traceparent"] for s in (first, second)}
    assert headers == {f"00-{TRACE}-{s.span_id:016x}-01" for s in (first, second)}
    trace.closed = True
    assert trace.span("late") is NOOP_SPAN  # nothing joins a trace that has been handed over


def test_the_request_log_writes_one_json_line_per_request(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(str(path), queue_size=100)
    for i in range(5):
        log.write({"request_id": f"r{i}", "status": 200})
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(5)]


async def test_trace_headers_reach_the_upstream() -> None:
    """The call's headers (trace context among them) are on the wire with the request id."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        seen.append(head)
        body = b'{"id": "x", "choices": []}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = OpenAIHTTPTransport("up", f"http://127.0.0.1:{port}/v1")
    headers = {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "a=b"}
    try:
        response = await transport.send(
            UpstreamCall("chat/completions", {"model": "m"}, False, "req-1", headers=headers, dialect=CHAT)
        )
        assert b'"id"' in await response.read()
        await response.aclose()
    finally:
        await transport.aclose()
        server.close()
    (head,) = seen
    lines = {line.lower() for line in head.split(b"\r\n")}
    assert f"traceparent: 00-{TRACE}-{SPAN}-01".encode() in lines and b"tracestate: a=b" in lines
    assert b"x-request-id: req-1" in lines
