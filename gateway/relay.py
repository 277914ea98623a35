"""Relay policy: which backend gets a request, what happens when it fails, and when to hedge.

A streamed request is *committed* to a backend at its first event that carries content (text,
tool calls or a finish reason). Until then nothing has reached the client, so failures retry on
another backend, a fallback model, or after a jittered backoff; and when the first-token deadline
passes, a hedge goes to the next-best backend and whichever produces content first wins (the
loser is closed at once). After the commit, the relay only forwards: a failure or a stall becomes
an error event (written by `gateway/responses.py`).

`Relay.attempt(ctx, body)` hands out the committed `Attempt` (gateway/attempt.py) as an async
context manager; the attempt owns its lease, circuit and TTFT bookkeeping and its close. This
module sees backends only through `UpstreamTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from gateway import metrics
from gateway.attempt import Attempt, failure_reason
from gateway.backends.backend import Lease
from gateway.backends.prefix import PrefixMap, prefix_chain, render_prompt
from gateway.backends.registry import BackendRegistry
from gateway.backends.ttft import LatencyWindow
from gateway.context import RequestContext
from gateway.errors import NoBackendAvailable, SwitchyardError, UpstreamError
from gateway.settings import RelaySettings, ResilienceSettings
from gateway.telemetry.propagation import passthrough
from gateway.telemetry.spans import SpanRecord
from gateway.types import JSON, Priority
from gateway.upstreams.base import UpstreamCall

__all__ = ["HedgeBudget", "Relay", "describe_choice"]

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


class Relay:
    def __init__(
        self,
        registry: BackendRegistry,
        settings: RelaySettings,
        resilience: ResilienceSettings,
        rng: random.Random | None = None,
        prefixes: PrefixMap | None = None,
    ):
        self.registry = registry
        self.settings = settings
        self.resilience = resilience
        self.prefixes = prefixes  # the prefix balancer's map (relay.balancer: prefix)
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

    # -- handing out a committed attempt ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def attempt(self, ctx: RequestContext, body: JSON) -> AsyncIterator[Attempt]:
        """The committed attempt for this request, closed when the block ends."""
        async with await self.commit(ctx, body) as attempt:
            yield attempt

    async def commit(self, ctx: RequestContext, body: JSON) -> Attempt:
        """Race, retry and fall back until one attempt commits; the caller must close it (it is an
        async context manager). Raises the last error when no backend could answer."""
        self.hedge_budget.earn()
        deadline = self.first_token_deadline(ctx.model, ctx.priority) if ctx.stream else None
        retry = _RetryState(self.resilience.retries)
        chain: list[str] = []
        affinity = None
        if self.prefixes is not None and ctx.endpoint != "embeddings":
            chain = prefix_chain(render_prompt(body), self.settings.prefix_chunk_chars, ctx.model)
            found = await self.prefixes.owner(chain)
            affinity = found[0] if found else None
        lease = await self._lease(ctx, retry.failed, affinity)
        if deadline is None:
            attempt = await self._one_at_a_time(ctx, body, lease, retry)
        else:
            attempt = await self._race(ctx, body, lease, retry, deadline)
        if self.prefixes is not None:
            self.prefixes.record(chain, attempt.backend)  # it holds this prompt's prefix now
        return attempt

    def _new_attempt(self, ctx: RequestContext, lease: Lease, body: JSON, hedge: bool = False) -> Attempt:
        if body.get("model") != lease.upstream_model:
            body = {**body, "model": lease.upstream_model}
        call = UpstreamCall(
            ctx.endpoint,
            body,
            ctx.stream,
            ctx.request_id,
            ctx.priority,
            dict(ctx.upstream_headers),
            dialect=ctx.dialect,
        )
        if ctx.trace is None:
            call.headers.update(passthrough(ctx.headers))  # not tracing: the client's context goes on as is
        return Attempt(self.registry, lease, call, assemble=ctx.capture, hedge=hedge, trace=ctx.trace)

    async def _lease(self, ctx: RequestContext, failed: set[str], affinity: str | None = None) -> Lease:
        chain = self.registry.chain(ctx.model)
        others = any(b.name not in failed for m in chain for b in self.registry.candidates(m))
        exclude = failed if others else set()  # with one backend, retry the same one
        if ctx.trace is None:
            return await self.registry.acquire(ctx.model, exclude, affinity)
        span = ctx.trace.span("switchyard.route")
        lease = None
        try:
            lease = await self.registry.acquire(ctx.model, exclude, affinity)
            return lease
        except SwitchyardError as exc:
            span.fail(exc.message)
            raise
        finally:
            describe_choice(span, self.registry, ctx.model, lease, exclude)
            span.end()

    def _backoff(self, attempt_no: int) -> float:
        base = self.resilience.backoff_base * (2**attempt_no)
        return float(min(self.resilience.backoff_max, base * self._rng.uniform(0.5, 1.5)))

    async def _one_at_a_time(self, ctx: RequestContext, body: JSON, lease: Lease, retry: _RetryState) -> Attempt:
        """No hedging possible (plain requests, or no deadline yet): attempts in sequence, no tasks."""
        while True:
            attempt = self._new_attempt(ctx, lease, body)
            try:
                await attempt.open()
            except Exception as exc:
                lease = await self._after_failure(ctx, attempt, _as_error(exc), retry)
                continue
            except BaseException:
                await attempt.aclose()
                raise
            self._won(attempt)
            return attempt

    async def _race(
        self, ctx: RequestContext, body: JSON, lease: Lease, retry: _RetryState, deadline: float
    ) -> Attempt:
        """Streams with a first-token deadline: past it, a hedge races the primary."""
        tasks: dict[asyncio.Task[None], Attempt] = {}

        def launch(lease: Lease, hedge: bool = False) -> None:
            attempt = self._new_attempt(ctx, lease, body, hedge)
            tasks[asyncio.create_task(attempt.open())] = attempt

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
                        await self._close_losers(ctx, tasks)
                        self._won(attempt)
                        return attempt
                    error = _as_error(exc)
                    if tasks:  # a hedge is still running: let it answer
                        attempt.fail(error)
                        await attempt.aclose()
                        if error.retryable:
                            retry.failed.add(attempt.backend)
                        continue
                    launch(await self._after_failure(ctx, attempt, error, retry))
        except BaseException:
            await self._close_losers(ctx, tasks, won=False)
            raise

    async def _after_failure(
        self, ctx: RequestContext, attempt: Attempt, error: SwitchyardError, retry: _RetryState
    ) -> Lease:
        """Close a failed attempt; return the lease for the next one, or raise when there is none."""
        attempt.fail(error)
        await attempt.aclose()
        if not error.retryable or retry.left <= 0:
            raise error
        retry.failed.add(attempt.backend)
        metrics.labelled(metrics.RETRIES, attempt.backend, failure_reason(error)).inc()
        if ctx.trace is not None:
            ctx.trace.retries += 1
        retry_no = self.resilience.retries - retry.left
        retry.left -= 1
        await asyncio.sleep(self._backoff(retry_no))  # jittered backoff between attempts
        try:
            return await self._lease(ctx, retry.failed)
        except NoBackendAvailable:
            raise error from None

    def _won(self, attempt: Attempt) -> None:
        attempt.commit()
        if attempt.hedge:
            metrics.labelled(metrics.HEDGES, attempt.model, "won").inc()
        if attempt.assembler is not None and attempt.first_token_at is not None:
            ttft = attempt.first_token_at - attempt.sent_at
            self._ttft_windows.setdefault(attempt.model, LatencyWindow()).add(ttft)

    def _maybe_hedge(
        self, ctx: RequestContext, tasks: dict[asyncio.Task[None], Attempt], launch: Callable[[Lease, bool], None]
    ) -> None:
        running = {a.backend for a in tasks.values()}
        if not self.hedge_budget.spend():
            metrics.labelled(metrics.HEDGES, ctx.model, "over_budget").inc()
            return
        lease = self.registry.try_acquire(ctx.model, running)
        if ctx.trace is not None:
            span = ctx.trace.span("switchyard.route")
            describe_choice(span, self.registry, ctx.model, lease, running, hedge=True)
            span.end()
        if lease is None:
            self.hedge_budget.earn()  # not spent after all
            metrics.labelled(metrics.HEDGES, ctx.model, "no_backend").inc()
            return
        metrics.labelled(metrics.HEDGES, ctx.model, "sent").inc()
        if ctx.trace is not None:
            ctx.trace.hedges += 1
        launch(lease, True)

    async def _close_losers(
        self, ctx: RequestContext, tasks: dict[asyncio.Task[None], Attempt], *, won: bool = True
    ) -> None:
        """Cancel and close the attempts still racing: losers of a race someone won, or all of
        them when the request itself went away."""
        for task, attempt in list(tasks.items()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if won:
                attempt.lose()
            await attempt.aclose()
        tasks.clear()


def describe_choice(
    span: SpanRecord,
    registry: BackendRegistry,
    model: str,
    lease: Lease | None,
    exclude: AbstractSet[str],
    *,
    hedge: bool = False,
) -> None:
    """The backend-choice span: every candidate with its predicted TTFT (-1: no prediction yet)
    and whether it could be used, and the one chosen."""
    if not span.recording:
        return
    names: list[str] = []
    predicted: list[float] = []
    usable: list[bool] = []
    for m in registry.chain(model):
        for b in registry.candidates(m):
            if b.name in names:
                continue
            chosen = lease is not None and b is lease.backend
            p = b.ttft.predict(lease.outstanding_at_send if chosen and lease is not None else b.outstanding)
            names.append(b.name)
            predicted.append(-1.0 if p is None else round(p, 6))
            usable.append(chosen or (b.name not in exclude and b.usable()))
    span.set(
        {
            "switchyard.route.policy": registry.policy,
            "switchyard.route.candidates": names,
            "switchyard.route.predicted_ttft_s": predicted,
            "switchyard.route.usable": usable,
            "switchyard.route.excluded": sorted(exclude) or None,
            "switchyard.route.hedge": hedge or None,
        }
    )
    if lease is None:
        span.set({"switchyard.route.chosen": "none"})
        return
    span.set(
        {
            "switchyard.route.chosen": lease.backend.name,
            "switchyard.route.model": lease.public_model,
            "switchyard.route.fallback": lease.public_model != model or None,
            "switchyard.route.outstanding": lease.outstanding_at_send,
        }
    )


def _as_error(exc: BaseException) -> SwitchyardError:
    if isinstance(exc, SwitchyardError):
        return exc
    log.error("unexpected failure talking to a backend", exc_info=exc)
    return UpstreamError(f"backend failed: {type(exc).__name__}")
