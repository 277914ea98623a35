"""`Telemetry`: built once at start-up; starts each request's trace and settles it at the end.

Off (no exporter configured and no request log) it is inert: `start` returns None, and every
place that records checks that one value, so nothing is allocated per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Iterable, Mapping

from gateway.telemetry.attributes import content_of, log_line, server_attributes
from gateway.telemetry.config import RequestLogSettings, TracingConfig, TracingSettings, tracing_config
from gateway.telemetry.export import SpanShipper
from gateway.telemetry.propagation import new_trace_id, parse_traceparent
from gateway.telemetry.redact import Redactor
from gateway.telemetry.request_log import RequestLog
from gateway.telemetry.spans import RequestTrace

__all__ = ["Telemetry"]

log = logging.getLogger(__name__)


class Telemetry:
    def __init__(
        self,
        config: TracingConfig,
        tracing: TracingSettings,
        request_log: RequestLogSettings,
        secrets: Iterable[str] = (),
    ):
        self.config = config
        self.settings = tracing
        self.log_settings = request_log
        self.tracing = config.enabled
        self.sampler = config.sampler
        self.redact = Redactor(secrets)
        self.shipper = SpanShipper(config) if config.enabled else None
        self.request_log = RequestLog(request_log.path, request_log.queue_size) if request_log.enabled else None
        self._log_rate = request_log.sample_rate if request_log.enabled else 0.0
        self.active = self.tracing or self._log_rate > 0
        if self.tracing:
            log.info("tracing on: %s to %s, sampler %s", ",".join(config.exporters), config.endpoint, config.sampler)

    @classmethod
    def from_environment(
        cls,
        tracing: TracingSettings,
        request_log: RequestLogSettings,
        secrets: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Telemetry:
        return cls(tracing_config(os.environ if environ is None else environ), tracing, request_log, secrets)

    # -- per request (the hot path) ----------------------------------------------------------------

    def start(self, headers: list[tuple[bytes, bytes]]) -> RequestTrace | None:
        """The trace of a request that just arrived (its raw ASGI headers), or None when off."""
        rate = self._log_rate
        logged = rate >= 1.0 or (rate > 0.0 and random.random() < rate)
        if not self.tracing and not logged:
            return None
        traceparent = tracestate = None
        for name, value in headers:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        parent = parse_traceparent(traceparent, tracestate)
        trace_id = parent.trace_id if parent is not None else new_trace_id()
        sampled = self.tracing and self.sampler.decide(trace_id, parent)
        return RequestTrace(
            trace_id,
            parent,
            sampled,
            traced=self.tracing,
            log=logged,
            record_content=(sampled and self.settings.record_content) or (logged and self.log_settings.record_content),
        )

    def submit(self, trace: RequestTrace, request_id: str, endpoint: str, method: str, path: str, status: int) -> None:
        """The request is over: its spans go to the exporter, its line to the request log. Never
        raises: a fault in telemetry must not become the request's."""
        try:
            self._submit(trace, request_id, endpoint, method, path, status)
        except Exception:
            log.exception("could not record the trace of request %s", request_id)
        finally:
            trace.ctx = trace.completion = trace.error = None

    def _submit(self, trace: RequestTrace, request_id: str, endpoint: str, method: str, path: str, status: int) -> None:
        trace.closed = True
        server = trace.server
        server.end()
        if trace.sampled and self.shipper is not None:
            server.name = f"{method} {path}"
            server.set(server_attributes(trace, method, path, status))
            if status >= 500:
                server.fail(f"HTTP {status}")
            if self.settings.record_content:
                prompt, answer = content_of(trace, self.redact)
                server.set({"gen_ai.input.messages": prompt, "gen_ai.output.messages": answer})
            parent = trace.parent
            self.shipper.offer(
                (
                    trace.trace_id,
                    parent.tracestate if parent else None,
                    parent.span_id if parent else None,
                    [span.as_tuple() for span in trace.spans],
                )
            )
        if trace.log and self.request_log is not None:
            duration = (server.end_ns - server.start_ns) / 1e9
            line = log_line(trace, request_id, endpoint, trace.status or status, duration)
            if self.log_settings.record_content:
                line["prompt"], line["completion"] = content_of(trace, self.redact)
            self.request_log.write(line)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Export what is queued (a few seconds at most) and stop the writers."""
        if self.shipper is not None:
            await asyncio.to_thread(self.shipper.close)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)
