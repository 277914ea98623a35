"""The tool router seen through the gateway: 300 tools in, a few out to the backend, the tools that
must survive always kept, and tool calls in answers teaching the router."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import RedisServer, ServerProcess
from tests.support.stack import SimControl, metric_value, sim_backend, start_gateway, start_sim

DOMAINS = {
    "weather": "the weather forecast for a city",
    "flight": "airline flights between two airports",
    "hotel": "hotel rooms in a city",
    "email": "email messages in the user's mailbox",
    "calendar": "events in the user's calendar",
    "stock": "stock market share prices",
    "recipe": "cooking recipes and ingredients",
    "music": "songs and playlists in a music library",
    "invoice": "customer invoices and billing",
    "ticket": "customer support tickets",
    "shipment": "parcel shipments and deliveries",
    "payment": "card payments and refunds",
    "contact": "people in the address book",
    "document": "shared documents and files",
    "translation": "text translation between languages",
    "reminder": "personal reminders and alarms",
    "restaurant": "restaurant table reservations",
    "car": "rental cars at a location",
    "news": "news articles about a topic",
    "currency": "currency exchange rates",
}
ACTIONS = {
    "get": "Get",
    "search": "Search",
    "create": "Create",
    "update": "Update",
    "delete": "Delete",
    "list": "List",
    "cancel": "Cancel",
    "share": "Share",
    "archive": "Archive",
    "export": "Export",
    "import": "Import",
    "count": "Count",
    "summarize": "Summarize",
    "schedule": "Schedule",
    "rate": "Rate",
}


def catalogue() -> list[dict[str, Any]]:
    tools = []
    for domain, what in DOMAINS.items():
        for action, verb in ACTIONS.items():
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": f"{action}_{domain}",
                        "description": f"{verb} {what}.",
                        "parameters": {
                            "type": "object",
                            "properties": {"query": {"type": "string"}},
                            "required": ["query"],
                        },
                    },
                }
            )
    return tools


TOOLS = catalogue()


# The learned model is judged on held-back calls (one in four; router/conformal.py) before it is
# used: with these, TEACH_CALLS taught calls are enough to decide, where a deployment waits for hundreds.
LEARN_FAST = {"shadow_fraction": 0.0, "train_interval_s": 0.1, "embed_timeout_s": 5.0,
              "calibration_min": 3, "coverage": 0.75}
TEACH_CALLS = 12


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServerProcess, SimControl]]:
    """A fresh gateway per test: what one test teaches the router must not steer another."""
    tmp = tmp_path
    sim = start_sim("--output-tokens", "4", log_dir=tmp)
    config = {
        "auth": {"mode": "none"},
        "backends": [sim_backend("s", sim)],
        "cache": {"enabled": False},
        "router": {"pinned": ["export_news"], **LEARN_FAST},
    }
    gw = start_gateway(config, tmp, lean=False, timeout=120)
    try:
        _warm(gw)
        yield gw, SimControl(sim)
    finally:
        gw.stop()
        sim.stop()


def _warm(gw: ServerProcess) -> None:
    """A new catalogue's first requests pass whole while its tools are embedded in the background."""
    deadline = time.monotonic() + 180  # 300 embeddings on a busy 2-core machine
    while time.monotonic() < deadline:
        probe = _send(gw, "What will the weather be like in Lisbon tomorrow?", tool_choice="none")
        if probe.headers["x-switchyard-tools"] != "300->300":
            return
        time.sleep(0.2)  # polling until the background embedding is done, bounded
    raise AssertionError("the tool catalogue was never embedded")


def _send(gw: ServerProcess, question: str, **extra: Any) -> httpx.Response:
    body = {"model": "sim-model", "messages": [{"role": "user", "content": question}], "tools": TOOLS, **extra}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp


def _forwarded_tools(sim: SimControl) -> list[dict[str, Any]]:
    return sim.last_request()["body"]["tools"]  # type: ignore[no-any-return]


def test_300_tools_reach_the_backend_narrowed_and_unchanged(stack: tuple[ServerProcess, SimControl]) -> None:
    gw, sim = stack
    resp = _send(gw, "What will the weather be like in Lisbon tomorrow?")
    forwarded = _forwarded_tools(sim)
    names = [t["function"]["name"] for t in forwarded]
    assert resp.headers["x-switchyard-tools"] == f"300->{len(forwarded)}"
    assert len(forwarded) <= 16
    assert "get_weather" in names
    assert all(t in TOOLS for t in forwarded)  # byte-for-byte the client's definitions
    assert names == [t["function"]["name"] for t in TOOLS if t["function"]["name"] in names]  # original order


def test_forced_pinned_and_previously_called_tools_survive(stack: tuple[ServerProcess, SimControl]) -> None:
    gw, sim = stack
    history = [
        {"role": "user", "content": "Send the quarterly numbers to Ana"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "share_document", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        {"role": "user", "content": "What will the weather be like in Lisbon tomorrow?"},
    ]
    body = {
        "model": "sim-model",
        "messages": history,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "rate_car"}},
    }
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    names = {t["function"]["name"] for t in _forwarded_tools(sim)}
    assert {"rate_car", "export_news", "share_document", "get_weather"} <= names
    assert len(names) < 300


def test_few_tools_pass_untouched(stack: tuple[ServerProcess, SimControl]) -> None:
    gw, sim = stack
    few = TOOLS[:5]
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "tools": few}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
    assert resp.headers["x-switchyard-tools"] == "5->5"
    assert _forwarded_tools(sim) == few


QUESTION = "Please take care of the thing we talked about for Maria"  # names no tool: zero-shot scores are flat
TAUGHT = "import_invoice"  # what this tenant's model keeps calling for it


def _teach_by_streaming(gw: ServerProcess) -> None:
    """The model answers QUESTION with TAUGHT, streamed, TEACH_CALLS times (forced, so that it is
    sent: the router alone would not keep a tool the question does not name)."""
    for _ in range(TEACH_CALLS):
        body = {
            "model": "sim-model",
            "stream": True,
            "messages": [{"role": "user", "content": QUESTION}],
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": TAUGHT}},
            "sim": {"tool": TAUGHT},
        }
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as resp:
            lines = list(resp.iter_lines())
        assert any(f'"name":"{TAUGHT}"' in line.replace(" ", "") for line in lines)


def _wait_until_learned(gw: ServerProcess, sim: SimControl) -> set[str]:
    """The tools forwarded for QUESTION once the router narrows it (tool_choice "none": these probes
    must not produce tool calls of their own to learn from)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _send(gw, QUESTION, tool_choice="none")
        names = {t["function"]["name"] for t in _forwarded_tools(sim)}
        if len(names) <= 16:
            return names
        time.sleep(0.2)  # training runs in the background; poll the observable result, bounded
    raise AssertionError("the router did not learn from the observed tool calls")


def test_streamed_tool_calls_teach_the_router(stack: tuple[ServerProcess, SimControl]) -> None:
    gw, sim = stack
    _send(gw, QUESTION, tool_choice="none")
    untaught = {t["function"]["name"] for t in _forwarded_tools(sim)}
    assert TAUGHT not in untaught  # the question does not name it: zero-shot drops it
    _teach_by_streaming(gw)
    names = _wait_until_learned(gw, sim)
    assert TAUGHT in names  # confident enough now to narrow, keeping the taught tool
    text = httpx.get(gw.url + "/metrics").text
    assert metric_value(text, "switchyard_router_feedback_examples_total") == TEACH_CALLS


@pytest.mark.redis
def test_learning_survives_a_gateway_restart_with_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    sim = start_sim("--output-tokens", "4", log_dir=tmp_path)
    config = {
        "auth": {"mode": "none"},
        "redis": {"url": redis_server.url},
        "backends": [sim_backend("s", sim)],
        "cache": {"enabled": False},
        "router": LEARN_FAST,
    }
    try:
        first = start_gateway(config, tmp_path, name="first", lean=False, timeout=120)
        try:
            _warm(first)
            _teach_by_streaming(first)
            assert TAUGHT in _wait_until_learned(first, SimControl(sim))
        finally:
            first.stop()
        second = start_gateway(config, tmp_path, name="second", lean=False, timeout=120)
        try:
            _warm(second)
            names = _wait_until_learned(second, SimControl(sim))  # no teaching here: it comes from Redis
            assert TAUGHT in names and len(names) <= 16
            assert metric_value(httpx.get(second.url + "/metrics").text,
                                "switchyard_router_feedback_examples_total") == 0
        finally:
            second.stop()
    finally:
        sim.stop()
