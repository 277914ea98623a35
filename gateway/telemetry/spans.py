"""What a request records while it runs: small plain span records, nothing of the SDK.

The hot path only appends to lists and dicts here; turning records into OpenTelemetry spans and
exporting them happens in another process (`gateway/telemetry/export.py`). An unsampled request
still has a `RequestTrace` (its trace id goes upstream and into the request log), but every span
it asks for is `NOOP_SPAN`, which records nothing.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from gateway.telemetry.propagation import Parent, format_traceparent, new_span_id

__all__ = ["CLIENT", "CURRENT_TRACE", "INTERNAL", "NOOP_SPAN", "SERVER", "RequestTrace", "SpanRecord"]

# SpanKind values as OTLP numbers them.
INTERNAL, SERVER, CLIENT = 1, 2, 3

# The trace of the request being served, set by the edge for the request's task; the request's
# context picks it up when it is made.
CURRENT_TRACE: ContextVar[RequestTrace | None] = ContextVar("switchyard_trace", default=None)

Event = tuple[str, int, dict[str, Any] | None]  # name, time (ns since the epoch), attributes


class SpanRecord:
    __slots__ = ("attributes", "end_ns", "error", "events", "kind", "name", "parent_id", "span_id", "start_ns")

    def __init__(self, name: str, kind: int, span_id: int, parent_id: int | None, start_ns: int):
        self.name = name
        self.kind = kind
        self.span_id = span_id
        self.parent_id = parent_id
        self.start_ns = start_ns
        self.end_ns = 0
        self.attributes: dict[str, Any] = {}
        self.events: list[Event] = []
        self.error: str | None = None  # set: the span's status is ERROR with this description

    @property
    def recording(self) -> bool:
        return True

    def set(self, attributes: dict[str, Any]) -> None:
        """Add attributes; None values are left out (OTLP has no null)."""
        for key, value in attributes.items():
            if value is not None:
                self.attributes[key] = value

    def event(self, name: str, at_ns: int | None = None, attributes: dict[str, Any] | None = None) -> None:
        self.events.append((name, at_ns or time.time_ns(), attributes))

    def fail(self, description: str) -> None:
        self.error = description

    def end(self, at_ns: int | None = None) -> None:
        if not self.end_ns:
            self.end_ns = at_ns or time.time_ns()

    def as_tuple(self) -> tuple[Any, ...]:
        """The picklable form the export process reads."""
        return (
            self.name,
            self.kind,
            self.span_id,
            self.parent_id,
            self.start_ns,
            self.end_ns or time.time_ns(),
            self.attributes,
            self.events,
            self.error,
        )


class _NoopSpan(SpanRecord):
    """What an unsampled request gets: accepts everything, keeps nothing."""

    __slots__ = ()

    @property
    def recording(self) -> bool:
        return False

    def set(self, attributes: dict[str, Any]) -> None:
        pass

    def event(self, name: str, at_ns: int | None = None, attributes: dict[str, Any] | None = None) -> None:
        pass

    def fail(self, description: str) -> None:
        pass

    def end(self, at_ns: int | None = None) -> None:
        pass


NOOP_SPAN: SpanRecord = _NoopSpan("noop", INTERNAL, 0, None, 0)


class RequestTrace:
    """One request's trace: its ids, its spans, and what the request log and the server span
    learn about it when it ends. Made by `Telemetry.start` (gateway/telemetry/telemetry.py)."""

    __slots__ = (
        "closed",
        "completion",
        "ctx",
        "error",
        "hedges",
        "log",
        "offset_ns",
        "parent",
        "record_content",
        "retries",
        "sampled",
        "server",
        "spans",
        "stage",
        "status",
        "trace_id",
        "traced",
    )

    def __init__(
        self,
        trace_id: int,
        parent: Parent | None,
        sampled: bool,
        *,
        traced: bool = True,
        log: bool = False,
        record_content: bool = False,
    ):
        self.trace_id = trace_id
        self.parent = parent
        self.sampled = sampled  # this request's spans are recorded
        self.traced = traced  # the gateway takes part in traces (tracing is configured)
        self.log = log  # this request gets a request-log line
        self.record_content = record_content
        self.spans: list[SpanRecord] = []
        self.closed = False
        # perf_counter() seconds → ns since the epoch, for times the gateway took with perf_counter.
        self.offset_ns = time.time_ns() - time.perf_counter_ns()
        self.server = SpanRecord("", SERVER, new_span_id(), parent.span_id if parent else None, time.time_ns())
        if sampled:
            self.spans.append(self.server)
        self.stage: SpanRecord = NOOP_SPAN  # the pipeline stage running now
        self.hedges = 0
        self.retries = 0
        self.ctx: Any = None  # the RequestContext, once the pipeline has one
        self.completion: Any = None  # what the request produced (gateway.completion.Completion)
        self.error: BaseException | None = None  # what an error response said
        self.status = 0  # the status the gateway gave the request (499: the client left)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def span(
        self, name: str, kind: int = INTERNAL, parent: SpanRecord | None = None, start_ns: int | None = None
    ) -> SpanRecord:
        """A new child span (of `parent`, or of the server span); NOOP_SPAN when not recording."""
        if not self.sampled or self.closed:
            return NOOP_SPAN
        parent_id = (parent or self.server).span_id
        record = SpanRecord(name, kind, new_span_id(), parent_id, start_ns or time.time_ns())
        self.spans.append(record)
        return record

    def finished(self, ctx: Any, completion: Any, status: int) -> None:
        """What the pipeline learned, for the server span and the request log."""
        self.ctx, self.completion, self.status = ctx, completion, status

    def note(self, attributes: dict[str, Any]) -> None:
        """Attributes for the stage span that is running (stages describe their decision)."""
        self.stage.set(attributes)

    def ns(self, perf_seconds: float) -> int:
        return int(perf_seconds * 1e9) + self.offset_ns

    def upstream_headers(self, span: SpanRecord) -> dict[str, str]:
        """The trace context for one upstream attempt: its own span as the parent. A gateway that
        does not trace (only logs) passes the client's context on as it came."""
        parent = self.parent
        if not self.traced and parent is not None:
            span_id, sampled = parent.span_id, parent.sampled
        else:
            span_id = span.span_id if span.recording else self.server.span_id
            sampled = self.sampled
        headers = {"traceparent": format_traceparent(self.trace_id, span_id, sampled)}
        if parent is not None and parent.tracestate:
            headers["tracestate"] = parent.tracestate
        return headers

    def traceresponse(self) -> bytes:
        return format_traceparent(self.trace_id, self.server.span_id, self.sampled).encode()
