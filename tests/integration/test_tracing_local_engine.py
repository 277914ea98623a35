"""Traces of the built-in engine: the engine reports when it queued and prefilled a request, and
those become spans under the attempt. A tiny random Llama keeps this fast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.otlp import OTLPReceiver, assert_nowhere, log_lines
from tests.support.processes import ServerProcess
from tests.support.stack import TINY_MODEL, start_gateway, tiny_engine, wait_for

MODEL = TINY_MODEL
KEY = "sk-engine-trace-0123456789abcdef"
PROMPT = "Tell the lighthouse keeper in Reykjavik which umbrella to buy"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def engine_gateway(
    receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Path]]:
    tmp = tmp_path_factory.mktemp("traced-engine")
    log = tmp / "requests.jsonl"
    config = {
        "auth": {"mode": "none"},
        "cache": {"enabled": False},
        "request_log": {"enabled": True, "path": str(log)},
        "backends": [
            {
                "name": "local",
                "type": "local",
                "models": [MODEL],
                "engine": tiny_engine(tmp),
            }
        ],
    }
    env = {"HF_HUB_OFFLINE": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    gw = start_gateway(config, tmp, env=env, timeout=180)
    try:
        yield gw, log
    finally:
        gw.stop()


def _stream(gw: ServerProcess, max_tokens: int, cut: bool) -> str:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, timeout=60, headers={"authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status_code == 200
        if cut:
            next(r.iter_bytes())
        else:
            r.read()
        return r.headers["traceresponse"].split("-")[1]


def test_engine_queue_and_prefill_are_spans_under_the_attempt(
    engine_gateway: tuple[ServerProcess, Path], receiver: OTLPReceiver
) -> None:
    gw, log = engine_gateway
    trace_id = _stream(gw, 8, cut=False)
    names = {"POST /v1/chat/completions", f"chat {MODEL}", "switchyard.engine.queue", "switchyard.engine.prefill"}
    by_name = {s["name"]: s for s in receiver.wait_for_trace(trace_id, names)}
    attempt, queue, prefill = (
        by_name[n] for n in (f"chat {MODEL}", "switchyard.engine.queue", "switchyard.engine.prefill")
    )
    assert queue["parent_span_id"] == prefill["parent_span_id"] == attempt["span_id"]
    assert attempt["start"] <= queue["start"] <= queue["end"] == prefill["start"] <= prefill["end"] <= attempt["end"]
    assert prefill["attributes"]["gen_ai.usage.input_tokens"] > 0
    first_token = next(e for e in attempt["events"] if e["name"] == "gen_ai.first_token")
    assert prefill["end"] <= first_token["time"]
    a = attempt["attributes"]
    assert a["switchyard.attempt.outcome"] == "ok" and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.usage.input_tokens"] == prefill["attributes"]["gen_ai.usage.input_tokens"]
    server = by_name["POST /v1/chat/completions"]["attributes"]
    assert server["switchyard.backend"] == "local" and server["gen_ai.response.finish_reasons"]
    wait_for(lambda: any(line["trace_id"] == trace_id for line in log_lines(log)), what="the log line")
    assert_nowhere((KEY, PROMPT), receiver, log.read_text())


def test_a_cut_engine_stream_ends_its_spans(engine_gateway: tuple[ServerProcess, Path], receiver: OTLPReceiver) -> None:
    gw, log = engine_gateway
    trace_id = _stream(gw, 1500, cut=True)
    by_name = {s["name"]: s for s in receiver.wait_for_trace(trace_id, {"POST /v1/chat/completions", f"chat {MODEL}"})}
    assert by_name[f"chat {MODEL}"]["attributes"]["switchyard.attempt.outcome"] == "cancelled"
    wait_for(lambda: any(line["trace_id"] == trace_id for line in log_lines(log)), what="the log line")
    line = next(line for line in log_lines(log) if line["trace_id"] == trace_id)
    assert line["status"] == 499 and line["cancelled"] is True
    assert PROMPT not in json.dumps(line)
    assert_nowhere((KEY, PROMPT), receiver, log.read_text())
