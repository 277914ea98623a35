"""W3C Trace Context: the `traceparent` and `tracestate` headers, read from clients and written upstream.

    traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>

A malformed `traceparent` is ignored (the request starts a new trace), as the specification asks;
`tracestate` is kept only alongside a valid `traceparent`, and only if it is of a sane size.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["Parent", "format_traceparent", "new_span_id", "new_trace_id", "parse_traceparent", "passthrough"]

# Version 00 exactly; later versions may append fields after the flags, which we ignore.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_MAX_TRACESTATE = 512  # the specification's limit on what a vendor must propagate


@dataclass(frozen=True, slots=True)
class Parent:
    """The caller's span, as its `traceparent` named it."""

    trace_id: int
    span_id: int
    sampled: bool
    tracestate: str | None = None


def parse_traceparent(value: str | None, tracestate: str | None = None) -> Parent | None:
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if trace_id == 0 or span_id == 0:
        return None
    state = tracestate.strip() if tracestate else None
    if state and len(state) > _MAX_TRACESTATE:
        state = None
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1), state or None)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def passthrough(headers: object) -> dict[str, str]:
    """With tracing off, the client's trace context goes upstream untouched (a transparent hop)."""
    get = getattr(headers, "get", None)
    if get is None:
        return {}
    parent = get("traceparent")
    if not parent:
        return {}
    out = {"traceparent": parent}
    state = get("tracestate")
    if state:
        out["tracestate"] = state
    return out
