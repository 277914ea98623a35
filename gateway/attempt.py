"""One call to one backend, from lease to close: the unit the relay races, retries and commits.

An `Attempt` owns everything a single upstream call leaves behind, so that no caller has to
remember any of it:
- the backend lease, released exactly once (which wakes requests waiting for a slot);
- the circuit breaker's verdict on the backend, given once: success when the call committed
  (first content, or a whole valid body), failure when it broke, none when it was abandoned
  (cancelled, or a hedge that lost) since that says nothing about the backend;
- the TTFT observation that feeds backend choice, and the upstream metrics;
- closing the upstream response.

Use it as an async context manager; leaving the block closes it whatever happened. Writers
(`gateway/responses.py`, the cache's verification) only iterate `events()` or read `body`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import urlsplit

import orjson

from gateway import metrics
from gateway.backends.backend import Lease
from gateway.backends.registry import BackendRegistry
from gateway.completion import Completion
from gateway.dialect import Assembler, Dialect
from gateway.errors import (
    BadRequest,
    NoBackendAvailable,
    StreamStalled,
    SwitchyardError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from gateway.telemetry.attributes import OPERATIONS
from gateway.telemetry.spans import CLIENT, NOOP_SPAN, RequestTrace
from gateway.types import JSON
from gateway.upstreams.base import UpstreamCall, UpstreamResponse

__all__ = ["Attempt", "outcome_of", "parse_chunk"]

Event = tuple[bytes, JSON]  # an SSE data payload as received, and its parsed JSON


class _Verdict(enum.Enum):
    PENDING = "pending"
    COMMITTED = "committed"  # judged a success; the stream may still break later
    FAILED = "failed"
    ABANDONED = "abandoned"


class Attempt:
    def __init__(
        self,
        registry: BackendRegistry,
        lease: Lease,
        call: UpstreamCall,
        *,
        assemble: bool,
        hedge: bool,
        trace: RequestTrace | None = None,
    ):
        self.registry = registry
        self.lease = lease
        self.call = call
        self.hedge = hedge
        self.assembler: Assembler | None = call.dialect.assembler(assemble) if call.stream else None
        self.sent_at = 0.0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.ended_at: float | None = None
        self.body = b""  # plain calls: the whole body
        self.response_json: JSON | None = None  # plain calls: the body parsed; streams: assembled at the end
        self._response: UpstreamResponse | None = None
        self._events: AsyncIterator[bytes] | None = None
        self._held: list[Event] = []
        self._finished_early = False  # the stream ended while held (a short or empty answer)
        self._verdict = _Verdict.PENDING
        self._closed = False
        # Tracing: one client span per attempt, its id the parent the upstream sees.
        self.trace = trace
        self.span = NOOP_SPAN
        self._outcome: str | None = None
        if trace is not None:
            operation = OPERATIONS.get(call.endpoint, "chat")
            self.span = trace.span(f"{operation} {lease.upstream_model}", CLIENT)
            call.headers.update(trace.upstream_headers(self.span))

    @property
    def backend(self) -> str:
        return self.lease.backend.name

    @property
    def model(self) -> str:
        return self.lease.public_model

    # -- opening --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Send the call. A stream is read up to its first event with content (held, not yet
        forwarded); a plain call is read whole and must be a JSON object. Raises `SwitchyardError`
        (the call failed before anything could reach the client)."""
        self.sent_at = time.perf_counter()
        self._response = await self.lease.backend.transport.send(self.call)
        if self.span.recording:
            self._engine_spans()
        if self.assembler is None:
            self.body = await self._response.read()
            self.first_token_at = time.perf_counter()
            try:
                parsed = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                raise UpstreamError(f"backend '{self.backend}' sent a malformed response body")
            self.response_json = parsed
            return
        self._events = self._response.events()
        async for raw in self._events:
            parsed = parse_chunk(raw, self.backend, self.call.dialect)
            self._held.append((raw, parsed))
            if self.assembler.feed(parsed):
                self.first_token_at = time.perf_counter()
                self._first_token_event()
                return
        self._finished_early = True
        self.first_token_at = time.perf_counter()
        self._first_token_event()

    # -- verdicts (each attempt gets at most one) -----------------------------------------------

    def commit(self) -> None:
        """This attempt answers the request: the backend did its job, and its TTFT is known."""
        if self._verdict is not _Verdict.PENDING:
            return
        self._verdict = _Verdict.COMMITTED
        self.lease.backend.record_success()
        if self.assembler is not None and self.first_token_at is not None:
            ttft = self.first_token_at - self.sent_at
            self.lease.backend.ttft.observe(ttft, self.lease.outstanding_at_send)
            metrics.labelled(metrics.TTFT, self.model, self.backend).observe(ttft, metrics.exemplar(self.trace))
        if self.assembler is None or self._finished_early:
            self._finish()

    def fail(self, error: SwitchyardError) -> None:
        """The call failed before committing: judge the backend by what went wrong."""
        if self._verdict is not _Verdict.PENDING:
            return
        self._verdict = _Verdict.FAILED
        self._outcome = failure_reason(error)
        self.span.fail(error.message)
        metrics.labelled(metrics.UPSTREAM_REQUESTS, self.backend, self._outcome).inc()
        backend = self.lease.backend
        if isinstance(error, BadRequest) or (isinstance(error, UpstreamStatus) and not error.retryable):
            backend.record_success()  # the backend is fine; the request was not
        elif isinstance(error, NoBackendAvailable) or (
            isinstance(error, UpstreamStatus) and error.upstream_status == 429
        ):
            backend.circuit.release_probe()  # busy is not broken
        else:
            backend.record_failure()

    def lose(self) -> None:
        """A hedge race was won by another attempt. Its TTFT is at least as long as it has waited:
        without recording that, the backend's model would only see its fast answers."""
        if self._verdict is not _Verdict.PENDING:
            return
        if self.first_token_at is None and self.sent_at:
            self.lease.backend.ttft.observe(time.perf_counter() - self.sent_at, self.lease.outstanding_at_send)
        if self.assembler is not None:
            metrics.labelled(metrics.WASTED_TOKENS, self.model).inc(self.assembler.content_chunks)
        self._outcome = "lost"
        self._abandon()

    def _abandon(self) -> None:
        if self._verdict is _Verdict.PENDING:
            self._verdict = _Verdict.ABANDONED
            self.lease.backend.circuit.release_probe()

    # -- after the commit -----------------------------------------------------------------------

    async def events(self, stall_timeout: float) -> AsyncIterator[Event]:
        """Every event of the committed stream: the held ones, then the rest as they arrive. A gap
        longer than `stall_timeout` or a broken stream marks the backend failed and raises."""
        assert self.assembler is not None, "events() is for streams"
        held, self._held = self._held, []
        for event in held:
            yield event
        if self._finished_early or self._events is None:
            return
        assembler = self.assembler
        itl = metrics.labelled(metrics.ITL, self.model, self.backend)
        last = self.first_token_at or time.perf_counter()
        events = self._events
        while True:
            try:
                async with asyncio.timeout(stall_timeout):
                    raw = await anext(events)
                parsed = parse_chunk(raw, self.backend, self.call.dialect)
            except StopAsyncIteration:
                break
            except TimeoutError:
                error: SwitchyardError = StreamStalled(
                    f"backend '{self.backend}' stalled for more than {stall_timeout:g}s"
                )
                self._broke(error)
                raise error from None
            except SwitchyardError as exc:
                self._broke(exc)
                raise
            if assembler.feed(parsed):
                now = time.perf_counter()
                itl.observe(now - last)
                last = now
            yield raw, parsed
        self.last_token_at = last
        self._finish()

    def _broke(self, error: SwitchyardError) -> None:
        self._outcome = "stalled" if isinstance(error, StreamStalled) else "broken_stream"
        self.span.fail(error.message)
        self.lease.backend.record_failure()
        metrics.labelled(metrics.UPSTREAM_REQUESTS, self.backend, "broken_stream").inc()

    def _finish(self) -> None:
        """The answer is complete: the upstream metrics of a successful call."""
        self.ended_at = time.perf_counter()
        self._outcome = "ok"
        if self.assembler is not None:
            self.response_json = self.assembler.response(self.model)
        labels = (self.model, self.backend)
        metrics.E2E.labels(*labels).observe(self.ended_at - self.sent_at)
        metrics.labelled(metrics.UPSTREAM_REQUESTS, self.backend, "ok").inc()
        prompt, completion = self.call.dialect.usage_of(self.response_json or {})
        if prompt:
            metrics.labelled(metrics.TOKENS, *labels, "prompt").inc(prompt)
        if completion:
            metrics.labelled(metrics.TOKENS, *labels, "completion").inc(completion)
        if (
            completion
            and completion > 1
            and self.first_token_at is not None
            and self.last_token_at is not None
            and self.assembler is not None
        ):
            metrics.labelled(metrics.TPOT, *labels).observe(
                (self.last_token_at - self.first_token_at) / (completion - 1)
            )

    @property
    def finished(self) -> bool:
        return self.ended_at is not None

    # -- closing --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release the lease and close the upstream response (idempotent). An attempt closed without
        a verdict was abandoned: it says nothing about the backend."""
        if self._closed:
            return
        self._closed = True
        self._abandon()
        if self.span.recording:
            self._end_span()
        self.registry.release(self.lease)
        if self._events is not None:
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
        if self._response is not None:
            with contextlib.suppress(Exception):
                await self._response.aclose()

    # -- tracing ----------------------------------------------------------------------------------

    def _first_token_event(self) -> None:
        if self.span.recording and self.trace is not None and self.first_token_at is not None:
            self.span.event("gen_ai.first_token", self.trace.ns(self.first_token_at))

    def _engine_spans(self) -> None:
        """The local engine's queue and prefill, as child spans (it reports when it took the request)."""
        timings = getattr(self._response, "engine_timings", None)  # only the local engine's response has it
        trace = self.trace
        if timings is None or trace is None:
            return
        scheduled = timings.submitted + timings.queued_s
        queue = trace.span("switchyard.engine.queue", parent=self.span, start_ns=trace.ns(timings.submitted))
        queue.end(trace.ns(scheduled))
        prefill = trace.span("switchyard.engine.prefill", parent=self.span, start_ns=trace.ns(scheduled))
        prefill.set({"gen_ai.usage.input_tokens": timings.prompt_tokens})
        prefill.end(trace.ns(timings.first_token_at))

    def _end_span(self) -> None:
        """The attempt's outcome (ok, lost, cancelled, a failure reason) and what it produced."""
        lease, response = self.lease, self.response_json
        outcome = self._outcome or "cancelled"  # closed with no end: the client (or the race) went away
        attrs: dict[str, object] = {
            "gen_ai.operation.name": OPERATIONS.get(self.call.endpoint, "chat"),
            "gen_ai.request.model": lease.upstream_model,
            "switchyard.backend": self.backend,
            "switchyard.attempt.hedge": self.hedge,
            "switchyard.attempt.outcome": outcome,
            "switchyard.attempt.outstanding": lease.outstanding_at_send,
        }
        base_url = lease.backend.settings.base_url
        if base_url:
            url = urlsplit(base_url)
            attrs["server.address"] = url.hostname
            attrs["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        dialect = self.call.dialect
        usage = response if response is not None else {"usage": self.assembler.usage if self.assembler else None}
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = dialect.usage_of(usage)
        if response is not None:
            attrs["gen_ai.response.model"] = response.get("model")
            attrs["gen_ai.response.id"] = response.get("id")
            reason = dialect.finish_reason(response)
            attrs["gen_ai.response.finish_reasons"] = [reason] if reason else None
        if self.assembler is not None and self.first_token_at is not None and self.sent_at:
            attrs["gen_ai.response.time_to_first_chunk"] = self.first_token_at - self.sent_at
        self.span.set(attrs)
        self.span.end()

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def outcome_of(attempt: Attempt, completion: Completion) -> None:
    """Write what a finished attempt produced into the request's `Completion`."""
    completion.backend = attempt.backend
    if not attempt.finished:
        return
    response = attempt.response_json
    completion.ok = True
    completion.response = response
    completion.duration = (attempt.ended_at or attempt.sent_at) - attempt.sent_at
    if response is not None:
        dialect = attempt.call.dialect
        completion.prompt_tokens, completion.completion_tokens = dialect.usage_of(response)
        completion.cached_tokens = dialect.cached_tokens_of(response)
        completion.finish_reason = dialect.finish_reason(response)
    if attempt.assembler is not None and attempt.first_token_at is not None:
        completion.ttft = attempt.first_token_at - attempt.sent_at


def parse_chunk(raw: bytes, backend: str, dialect: Dialect) -> JSON:
    """One SSE data payload as JSON; an error event or anything malformed raises `UpstreamError`."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"backend '{backend}' sent a malformed stream event") from None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"backend '{backend}' sent a malformed stream event")
    message = dialect.error_in(parsed)
    if message is not None:
        raise UpstreamError(f"backend '{backend}' reported an error mid-stream: {message}")
    return parsed


def failure_reason(error: SwitchyardError) -> str:
    """A bounded label for why a call failed."""
    if isinstance(error, BadRequest):
        return "bad_request"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamStatus):
        return "http_429" if error.upstream_status == 429 else f"http_{error.upstream_status // 100}xx"
    return "error"
