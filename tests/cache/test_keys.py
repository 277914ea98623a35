from typing import Any

import pytest

from cache.keys import canonical_messages, request_keys
from tests.cache.support import chat

BASE = chat("What is the refund policy?")


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


TOOL_A = {"type": "function", "function": {"name": "a", "parameters": {}}}
TOOL_B = {"type": "function", "function": {"name": "b", "parameters": {}}}


@pytest.mark.parametrize(
    ("tenant", "request_", "why"),
    [
        ("t2", BASE, "tenant"),
        ("t1", with_(model="m2"), "model"),
        ("t1", with_(temperature=0.2), "temperature"),
        ("t1", with_(top_p=0.5), "top_p"),
        ("t1", with_(seed=7), "seed"),
        ("t1", with_(tools=[TOOL_A]), "tools"),
        ("t1", with_(tool_choice="required"), "tool_choice"),
        ("t1", with_(response_format={"type": "json_object"}), "response_format"),
        ("t1", with_(stop=["\n"]), "stop"),
        ("t1", with_(some_future_param=1), "unknown parameters are assumed to matter"),
        ("t1", chat("What is the refund policy?", system="You are terse."), "system prompt"),
        ("t1", chat("What is the refund policy?", system=None), "no system prompt"),
        ("t1", {**BASE, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                     *BASE["messages"]]}, "earlier turns"),
    ],
)
def test_what_separates_both_exact_and_scope(tenant: str, request_: dict[str, Any], why: str) -> None:
    base = request_keys("t1", BASE)
    other = request_keys(tenant, request_)
    assert other.exact != base.exact, why
    assert other.scope != base.scope, why


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (with_(stream=True, stream_options={"include_usage": True}), "streaming is a delivery detail"),
        (with_(user="alice"), "user"),
        (with_(max_tokens=100), "max_tokens is decided at serving time"),
        (with_(n=1), "n=1 is the default"),
        ({k: v for k, v in BASE.items() if k != "temperature"} | {"temperature": 0.0}, "0 and 0.0"),
        ({**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": [
            {"type": "text", "text": "What is the refund policy?"}]}]}, "text parts and plain string"),
    ],
)
def test_what_does_not_change_the_keys(request_: dict[str, Any], why: str) -> None:
    assert request_keys("t1", request_) == request_keys("t1", BASE), why


def test_tool_order_does_not_matter() -> None:
    assert request_keys("t1", with_(tools=[TOOL_A, TOOL_B])) == request_keys("t1", with_(tools=[TOOL_B, TOOL_A]))


def test_only_the_latest_turn_differs_between_exact_and_scope() -> None:
    a = request_keys("t1", chat("How do I reset my password?"))
    b = request_keys("t1", chat("how can I reset my password"))
    assert a.exact != b.exact
    assert a.scope == b.scope


def test_missing_temperature_is_the_backend_default() -> None:
    no_temp = {k: v for k, v in BASE.items() if k != "temperature"}
    assert request_keys("t1", no_temp, default_temperature=0.0) == request_keys("t1", BASE)
    assert request_keys("t1", no_temp, default_temperature=1.0) != request_keys("t1", BASE)


def test_tool_call_ids_are_renumbered() -> None:
    def convo(call_id: str) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ]

    assert canonical_messages(convo("call_abc")) == canonical_messages(convo("call_xyz"))
    keys = request_keys("t1", {"model": "m", "messages": convo("call_abc")})
    assert keys.scope is None  # a tool result is last: exact layer only


def test_images_keep_the_exact_layer_only() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:1"}}]}]}
    other = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:2"}}]}]}
    assert request_keys("t", request).scope is None
    assert request_keys("t", request).exact != request_keys("t", other).exact
