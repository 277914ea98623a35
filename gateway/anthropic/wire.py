"""Messages wire details shared by both translation directions and the writers: SSE framing, ids,
and the mapping between chat finish reasons and Messages stop reasons."""

from __future__ import annotations

import uuid

import orjson

from gateway.types import JSON

__all__ = ["FINISH_REASONS", "STOP_REASONS", "event", "message_id", "named_event"]

# chat finish_reason → Messages stop_reason ("stop" becomes stop_sequence when one matched)
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Messages stop_reason → chat finish_reason
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}


def message_id(seed: str | None = None) -> str:
    """A Messages id: the chat id's random part when there is one (so logs can be matched up)."""
    if seed:
        tail = seed.rsplit("-", 1)[-1]
        if tail and tail.isalnum():
            return "msg_" + tail
    return "msg_" + uuid.uuid4().hex


def event(payload: JSON) -> bytes:
    """One Messages SSE event; its name is its payload's `type`, as Anthropic sends them."""
    return named_event(payload["type"].encode(), orjson.dumps(payload))


def named_event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"
