"""The span export process: span records in over a pipe, OpenTelemetry SDK spans out to exporters.

Building SDK spans and encoding OTLP protobuf costs tens of microseconds a span in Python. In the
gateway's process that work would hold the GIL against the event loop; here it runs on its own.
The process reads batches of records, makes `ReadableSpan`s of them and hands them to the SDK's
exporters (OTLP over HTTP, console). It counts what it exported and what failed into shared
memory, which the gateway turns into metrics. It ends when the pipe closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.telemetry.config import TracingConfig

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import SynchronizedArray

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["EXPORTED", "FAILED", "export_main", "to_readable_spans"]

EXPORTED, FAILED = 0, 1  # slots of the shared counters

log = logging.getLogger("switchyard.trace_export")

# (trace id, tracestate, remote parent span id or None, [span tuples (SpanRecord.as_tuple)])
TraceBatch = list[tuple[int, str | None, int | None, list[tuple[Any, ...]]]]


def _exporters(config: TracingConfig) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    for name in config.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(OTLPSpanExporter(endpoint=config.endpoint))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
    return out


def to_readable_spans(batch: TraceBatch, resource: Any, scope: Any) -> list[ReadableSpan]:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    kinds = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
    sampled = TraceFlags(TraceFlags.SAMPLED)
    spans: list[ReadableSpan] = []
    for trace_id, tracestate, remote_parent, records in batch:
        state = TraceState.from_header([tracestate]) if tracestate else None
        for name, kind, span_id, parent_id, start, end, attributes, events, error in records:
            parent = None
            if parent_id is not None:
                parent = SpanContext(
                    trace_id, parent_id, is_remote=parent_id == remote_parent, trace_flags=sampled, trace_state=state
                )
            spans.append(
                ReadableSpan(
                    name=name,
                    context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=sampled, trace_state=state),
                    parent=parent,
                    resource=resource,
                    attributes=attributes,
                    events=[Event(n, attrs or {}, at) for n, at, attrs in events],
                    kind=kinds.get(kind, SpanKind.INTERNAL),
                    status=Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET),
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=scope,
                )
            )
    return spans


def _export(
    exporters: Sequence[SpanExporter], spans: list[ReadableSpan], max_batch: int, counts: SynchronizedArray[int]
) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    for i in range(0, len(spans), max_batch):
        chunk = spans[i : i + max_batch]
        ok = True
        for exporter in exporters:
            try:
                ok = exporter.export(chunk) is SpanExportResult.SUCCESS and ok
            except Exception:
                log.exception("span export failed")
                ok = False
        counts[EXPORTED if ok else FAILED] += len(chunk)


def export_main(config: TracingConfig, conn: Connection, counts: SynchronizedArray[int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway stops this process by closing the pipe
    # Exporting is background work: when CPUs are short, requests come first. If this process then
    # cannot keep up, the gateway's buffer fills and spans are dropped (and counted), as intended.
    with contextlib.suppress(OSError):
        os.nice(19)
    with contextlib.suppress(OSError):  # its name in ps and top (Linux), where it is told apart from the workers
        Path("/proc/self/comm").write_text("sy-span-export")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from gateway.telemetry import SCOPE_NAME, SCOPE_VERSION

    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME from the environment.
    resource = Resource.create({"service.name": config.service_name})
    scope = InstrumentationScope(SCOPE_NAME, SCOPE_VERSION)
    exporters = _exporters(config)
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            batch: TraceBatch = pickle.loads(data)
            _export(exporters, to_readable_spans(batch, resource, scope), config.max_batch, counts)
    finally:
        for exporter in exporters:
            exporter.shutdown()
