"""Relay policy: which backend gets a request, what happens when it fails, and when to hedge.

A streamed request is *committed* to a backend at its first chunk that carries content (text,
tool calls or a finish reason). Until then nothing has reached the client, so failures retry on
another backend, a fallback model, or after a jittered backoff; and when the first-token deadline
passes, a hedge goes to the next-best backend and whichever produces content first wins (the
loser is closed at once). After the commit, the relay only forwards: a failure or a stall becomes
an error event (see `gateway/responses.py`).

This module sees backends only through `UpstreamTransport`; bytes to the client are written by
`gateway/responses.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import metrics
from gateway.backends.backend import Lease
from gateway.backends.registry import BackendRegistry
from gateway.backends.ttft import LatencyWindow
from gateway.completion import StreamAssembler
from gateway.context import RequestContext
from gateway.errors import (
    BadRequest,
    NoBackendAvailable,
    StreamStalled,
    SwitchyardError,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from gateway.settings import RelaySettings, ResilienceSettings
from gateway.types import JSON, Priority
from gateway.upstreams.base import UpstreamCall, UpstreamResponse

__all__ = ["Attempt", "HedgeBudget", "Relay"]

log = logging.getLogger(__name__)

_MIN_SAMPLES_FOR_DEADLINE = 20


@dataclass
class _RetryState:
    left: int  # retries still allowed
    failed: set[str] = field(default_factory=set)  # backends that failed this request


class HedgeBudget:
    """Each primary request earns `fraction` of a hedge; a hedge spends one (at most `burst` saved)."""

    def __init__(self, fraction: float, burst: float = 5.0):
        self.fraction = fraction
        self.burst = burst
        self._tokens = 1.0 if fraction > 0 else 0.0

    def earn(self) -> None:
        self._tokens = min(self.burst, self._tokens + self.fraction)

    def spend(self) -> bool:
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(eq=False)
class Attempt:
    """One call to one backend. For streams, `opened` holds it until its first content chunk."""

    lease: Lease
    assembler: StreamAssembler | None
    hedge: bool = False
    sent_at: float = 0.0
    first_token_at: float | None = None
    response: UpstreamResponse | None = None
    events: AsyncIterator[bytes] | None = None
    held: list[tuple[bytes, JSON]] = field(default_factory=list)
    body: bytes = b""  # the whole body, for plain requests
    finished: bool = False  # the stream ended during the hold (a short or empty answer)

    @property
    def backend(self) -> str:
        return self.lease.backend.name

    async def aclose(self) -> None:
        if self.events is not None:
            with contextlib.suppress(Exception):
                await self.events.aclose()  # type: ignore[attr-defined]
        if self.response is not None:
            with contextlib.suppress(Exception):
                await self.response.aclose()


class Relay:
    def __init__(
        self,
        registry: BackendRegistry,
        settings: RelaySettings,
        resilience: ResilienceSettings,
        rng: random.Random | None = None,
    ):
        self.registry = registry
        self.settings = settings
        self.resilience = resilience
        self._rng = rng or random.Random()
        self.hedge_budget = HedgeBudget(settings.hedge_budget)
        self._ttft_windows: dict[str, LatencyWindow] = {}

    # -- deadlines and predictions ----------------------------------------------------------

    def first_token_deadline(self, model: str, priority: Priority) -> float | None:
        """Seconds to wait for the first token before hedging; None: do not hedge."""
        if not self.settings.hedge:
            return None
        fixed = self.settings.fixed_deadline(model, priority)
        if fixed is not None:
            return fixed
        if priority != "interactive":
            return None  # hedging spends backend capacity: batch hedges only past a deadline set for it
        window = self._ttft_windows.get(model)
        if window is None or len(window) < _MIN_SAMPLES_FOR_DEADLINE:
            return None
        p95 = window.percentile(95) or 0.0
        return max(self.settings.deadline_min, p95 * self.settings.deadline_p95_factor)

    def predicted_ttft(self, model: str) -> float | None:
        """The best predicted TTFT among the model's usable backends (None without data)."""
        best: float | None = None
        for m in self.registry.chain(model):
            for b in self.registry.candidates(m):
                if not b.usable():
                    continue
                p = b.ttft.predict(b.outstanding)
                if p is not None and (best is None or p < best):
                    best = p
        return best

    def observe_ttft(self, attempt: Attempt) -> None:
        if attempt.first_token_at is None:
            return
        ttft = attempt.first_token_at - attempt.sent_at
        attempt.lease.backend.ttft.observe(ttft, attempt.lease.outstanding_at_send)
        self._ttft_windows.setdefault(attempt.lease.public_model, LatencyWindow()).add(ttft)
        metrics.labelled(metrics.TTFT, attempt.lease.public_model, attempt.backend).observe(ttft)

    # -- opening a call ---------------------------------------------------------------------

    def _call(self, ctx: RequestContext, lease: Lease, body: JSON) -> UpstreamCall:
        if body.get("model") != lease.upstream_model:
            body = {**body, "model": lease.upstream_model}
        return UpstreamCall(ctx.endpoint, body, ctx.stream, ctx.request_id, ctx.priority)

    async def _open(self, ctx: RequestContext, attempt: Attempt, body: JSON) -> Attempt:
        """Send and, for streams, read until the first content chunk (held, not yet forwarded)."""
        call = self._call(ctx, attempt.lease, body)
        attempt.sent_at = time.perf_counter()
        attempt.response = await attempt.lease.backend.transport.send(call)
        if not ctx.stream:
            attempt.body = await attempt.response.read()
            attempt.first_token_at = time.perf_counter()
            return attempt
        attempt.events = attempt.response.events()
        assert attempt.assembler is not None
        async for raw in attempt.events:
            parsed = parse_chunk(raw, attempt.backend)
            attempt.held.append((raw, parsed))
            if attempt.assembler.feed(parsed):
                attempt.first_token_at = time.perf_counter()
                return attempt
        attempt.finished = True
        attempt.first_token_at = time.perf_counter()
        return attempt

    async def _lease(self, ctx: RequestContext, failed: set[str], *, wait: bool = True) -> Lease | None:
        chain = self.registry.chain(ctx.model)
        others = any(b.name not in failed for m in chain for b in self.registry.candidates(m))
        exclude = failed if others else set()  # with one backend, retry the same one
        if wait:
            return await self.registry.acquire(ctx.model, exclude)
        return self.registry.try_acquire(ctx.model, exclude)

    def _backoff(self, attempt_no: int) -> float:
        base = self.resilience.backoff_base * (2**attempt_no)
        return float(min(self.resilience.backoff_max, base * self._rng.uniform(0.5, 1.5)))

    # -- the pre-commit race ----------------------------------------------------------------

    async def start(self, ctx: RequestContext, body: JSON, *, assemble: bool) -> Attempt:
        """Get a committed attempt: retries, fallbacks and hedging happen here, invisibly."""
        self.hedge_budget.earn()
        deadline = self.first_token_deadline(ctx.model, ctx.priority) if ctx.stream else None
        retry = _RetryState(self.resilience.retries)
        lease = await self._lease(ctx, retry.failed)
        assert lease is not None
        if deadline is None:
            return await self._one_at_a_time(ctx, body, assemble, lease, retry)
        return await self._race(ctx, body, assemble, lease, retry, deadline)

    async def _one_at_a_time(
        self, ctx: RequestContext, body: JSON, assemble: bool, lease: Lease, retry: _RetryState
    ) -> Attempt:
        """No hedging possible (plain requests, or no deadline yet): attempts in sequence, no tasks."""
        while True:
            attempt = self._attempt(ctx, lease, assemble)
            try:
                await self._open(ctx, attempt, body)
            except Exception as exc:
                lease = await self._after_failure(ctx, attempt, _as_error(exc), retry)
                continue
            except BaseException:
                await self._abandon(attempt)
                raise
            self._won(attempt)
            return attempt

    async def _race(
        self, ctx: RequestContext, body: JSON, assemble: bool, lease: Lease, retry: _RetryState, deadline: float
    ) -> Attempt:
        """Streams with a first-token deadline: past it, a hedge races the primary."""
        tasks: dict[asyncio.Task[Attempt], Attempt] = {}

        def launch(lease: Lease, hedge: bool = False) -> None:
            attempt = self._attempt(ctx, lease, assemble, hedge)
            tasks[asyncio.create_task(self._open(ctx, attempt, body))] = attempt

        launch(lease)
        started = time.perf_counter()
        hedged = False
        try:
            while True:
                timeout = None if hedged else max(0.0, started + deadline - time.perf_counter())
                done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    hedged = True
                    self._maybe_hedge(ctx, tasks, launch)
                    continue
                for task in done:
                    attempt = tasks.pop(task)
                    exc = task.exception()
                    if exc is None:
                        await self._settle_losers(ctx, tasks, attempt)
                        return attempt
                    error = _as_error(exc)
                    if tasks:  # a hedge is still running: let it answer
                        self._record_failure(attempt, error)
                        self.registry.release(attempt.lease)
                        await attempt.aclose()
                        if error.retryable:
                            retry.failed.add(attempt.backend)
                        continue
                    launch(await self._after_failure(ctx, attempt, error, retry))
        except BaseException:
            for task, attempt in tasks.items():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await self._abandon(attempt)
            raise

    def _attempt(self, ctx: RequestContext, lease: Lease, assemble: bool, hedge: bool = False) -> Attempt:
        assembler = StreamAssembler(ctx.endpoint, assemble=assemble) if ctx.stream else None
        return Attempt(lease, assembler, hedge=hedge)

    async def _after_failure(
        self, ctx: RequestContext, attempt: Attempt, error: SwitchyardError, retry: _RetryState
    ) -> Lease:
        """Book a failed attempt; return the lease for the next one, or raise when there is none."""
        self._record_failure(attempt, error)
        self.registry.release(attempt.lease)
        await attempt.aclose()
        if not error.retryable or retry.left <= 0:
            raise error
        retry.failed.add(attempt.backend)
        metrics.labelled(metrics.RETRIES, attempt.backend, _reason(error)).inc()
        retry_no = self.resilience.retries - retry.left
        retry.left -= 1
        await asyncio.sleep(self._backoff(retry_no))  # jittered backoff between attempts
        try:
            lease = await self._lease(ctx, retry.failed)
        except NoBackendAvailable:
            raise error from None
        assert lease is not None
        return lease

    async def _abandon(self, attempt: Attempt) -> None:
        """The request went away (cancelled): free the attempt without judging the backend."""
        self.registry.release(attempt.lease)
        attempt.lease.backend.circuit.release_probe()
        await attempt.aclose()

    def _won(self, attempt: Attempt) -> None:
        attempt.lease.backend.record_success()
        if attempt.assembler is not None:  # streams only: a plain response has no first token to time
            self.observe_ttft(attempt)

    def _maybe_hedge(self, ctx: RequestContext, tasks: dict[asyncio.Task[Attempt], Attempt], launch: Any) -> None:
        running = {a.backend for a in tasks.values()}
        if not self.hedge_budget.spend():
            metrics.labelled(metrics.HEDGES, ctx.model, "over_budget").inc()
            return
        lease = self.registry.try_acquire(ctx.model, running)
        if lease is None:
            self.hedge_budget.earn()  # not spent after all
            metrics.labelled(metrics.HEDGES, ctx.model, "no_backend").inc()
            return
        metrics.labelled(metrics.HEDGES, ctx.model, "sent").inc()
        launch(lease, True)

    async def _settle_losers(
        self, ctx: RequestContext, tasks: dict[asyncio.Task[Attempt], Attempt], winner: Attempt
    ) -> None:
        if winner.hedge:
            metrics.labelled(metrics.HEDGES, ctx.model, "won").inc()
        now = time.perf_counter()
        for task, loser in list(tasks.items()):
            if loser.first_token_at is None and loser.sent_at:
                # The loser's TTFT is at least this long. Without recording it the backend's model
                # would only ever see its fast answers and keep attracting traffic.
                loser.lease.backend.ttft.observe(now - loser.sent_at, loser.lease.outstanding_at_send)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if loser.assembler is not None:
                metrics.labelled(metrics.WASTED_TOKENS, ctx.model).inc(loser.assembler.content_chunks)
            self.registry.release(loser.lease)
            loser.lease.backend.circuit.release_probe()
            await loser.aclose()
        tasks.clear()
        self._won(winner)

    def _record_failure(self, attempt: Attempt, error: SwitchyardError) -> None:
        outcome = _reason(error)
        metrics.labelled(metrics.UPSTREAM_REQUESTS, attempt.backend, outcome).inc()
        if isinstance(error, BadRequest) or (isinstance(error, UpstreamStatus) and not error.retryable):
            attempt.lease.backend.record_success()  # the backend is fine; the request was not
        elif isinstance(error, NoBackendAvailable) or (
            isinstance(error, UpstreamStatus) and error.upstream_status == 429
        ):
            attempt.lease.backend.circuit.release_probe()  # busy is not broken
        else:
            attempt.lease.backend.record_failure()

    # -- after the commit -------------------------------------------------------------------

    async def rest(self, attempt: Attempt) -> AsyncIterator[tuple[bytes, JSON]]:
        """The committed stream's remaining chunks; a stall or a broken stream raises UpstreamError."""
        if attempt.finished or attempt.events is None:
            return
        events = attempt.events
        stall = self.settings.stall_timeout
        while True:
            try:
                async with asyncio.timeout(stall):
                    raw = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamStalled(f"backend '{attempt.backend}' stalled for more than {stall:g}s") from None
            yield raw, parse_chunk(raw, attempt.backend)


def parse_chunk(raw: bytes, backend: str) -> JSON:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"backend '{backend}' sent a malformed stream event") from None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"backend '{backend}' sent a malformed stream event")
    error = parsed.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(f"backend '{backend}' reported an error mid-stream: {message}")
    return parsed


def _as_error(exc: BaseException) -> SwitchyardError:
    if isinstance(exc, SwitchyardError):
        return exc
    log.error("unexpected failure talking to a backend", exc_info=exc)
    return UpstreamError(f"backend failed: {type(exc).__name__}")


def _reason(error: SwitchyardError) -> str:
    if isinstance(error, BadRequest):
        return "bad_request"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamStatus):
        return "http_429" if error.upstream_status == 429 else f"http_{error.upstream_status // 100}xx"
    return "error"
