"""The request pipeline: run the stages in order, then relay. This module only composes.

    authenticate → conversation → admit → cache → narrow tools → relay

The conversation stage (Responses' stored state) turns a `previous_response_id` into the whole
conversation before admission counts its tokens and the cache keys on it.

A stage returns None to let the request go on, or a `Completion` when it answered the request
itself (a cache hit); refusals are raised as errors. The cache comes before the tool router so
that a hit skips narrowing; both are optional (off in configuration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from gateway import metrics
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import SwitchyardError
from gateway.relay import Relay
from gateway.responses import ASGIResponse, JSONBytesResponse, RelayResponse, SSEReplayResponse
from gateway.telemetry.spans import NOOP_SPAN, RequestTrace
from gateway.types import JSON

__all__ = ["Pipeline", "Stage"]

log = logging.getLogger(__name__)

Stage = Callable[[RequestContext], Awaitable[Completion | None]]


class Pipeline:
    def __init__(
        self,
        relay: Relay,
        *,
        authenticate: Stage,
        admit: Stage,
        conversation: Stage | None = None,
        cache: Stage | None = None,
        narrow_tools: Stage | None = None,
        embedder: Any = None,
        embed_timeout: float = 1.0,
    ):
        named = (
            ("auth", authenticate),
            ("conversation", conversation),
            ("admission", admit),
            ("cache", cache),
            ("tools", narrow_tools),
        )
        self.stages: tuple[Stage, ...] = tuple(s for _, s in named if s is not None)
        self.stage_spans = tuple(f"switchyard.{name}" for name, s in named if s is not None)
        self.relay = relay
        self.embedder = embedder
        self.embed_timeout = embed_timeout
        self._background: set[asyncio.Task[None]] = set()
        self.active = 0  # requests this pipeline has taken and not yet finished
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once every request this pipeline took has finished (a reload retires the old one)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _leave(self, endpoint: str) -> None:
        metrics.labelled(metrics.IN_FLIGHT, endpoint).dec()
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def run(self, ctx: RequestContext) -> Any:
        if self.embedder is not None:
            ctx.embed = self._memoised_embed()
        metrics.labelled(metrics.IN_FLIGHT, ctx.endpoint).inc()
        self.active += 1
        self._idle.clear()
        trace = ctx.trace
        if trace is not None and trace.record_content:
            ctx.capture = True  # the answer is recorded whole
        try:
            for i, stage in enumerate(self.stages):
                if trace is None:
                    answer = await stage(ctx)
                else:
                    answer = await self._traced(trace, self.stage_spans[i], stage, ctx)
                if answer is not None:
                    return self._answered(ctx, answer)
        except BaseException as exc:
            if trace is not None:
                trace.ctx = ctx  # refused: the edge records the error
            error = exc if isinstance(exc, SwitchyardError) else None
            refused = Completion(ctx.endpoint, ctx.model, None, ok=False, error=error)
            try:
                await ctx.settle(refused)  # release what admission reserved
                if ctx.on_complete:  # refused part-way: stages that waited for an outcome must hear of it
                    await ctx.run_hooks(ctx.on_complete, refused)
            finally:
                self._leave(ctx.endpoint)
            raise
        return RelayResponse(self.relay, ctx, self._upstream_body(ctx), self.finish)

    @staticmethod
    async def _traced(trace: RequestTrace, name: str, stage: Stage, ctx: RequestContext) -> Completion | None:
        """Run a stage inside its span; the stage describes its decision with `trace.note`."""
        span = trace.stage = trace.span(name)
        try:
            return await stage(ctx)
        except BaseException as exc:
            span.fail(getattr(exc, "message", None) or type(exc).__name__)
            raise
        finally:
            span.end()
            trace.stage = NOOP_SPAN

    def _answered(self, ctx: RequestContext, answer: Completion) -> ASGIResponse:
        """A stage answered without a backend (a cache hit): send it in the shape the client asked for."""
        assert answer.response is not None
        if ctx.stream:
            events = ctx.dialect.replay(answer.response, ctx.include_usage)
            return SSEReplayResponse(ctx, events, self.finish, answer)
        return JSONBytesResponse(ctx, orjson.dumps(answer.response), self.finish, answer)

    @staticmethod
    def _upstream_body(ctx: RequestContext) -> JSON:
        if not ctx.stream:
            return ctx.upstream_body if ctx.upstream_body is not None else ctx.body
        return ctx.dialect.stream_body(ctx.upstream_body if ctx.upstream_body is not None else ctx.body)

    def _memoised_embed(self) -> Callable[[str], Awaitable[np.ndarray | None]]:
        futures: dict[str, asyncio.Future[np.ndarray | None]] = {}
        embedder, timeout = self.embedder, self.embed_timeout

        async def embed(text: str) -> np.ndarray | None:
            if text not in futures:
                futures[text] = asyncio.ensure_future(embedder.embed_one(text, timeout))
            return await asyncio.shield(futures[text])

        return embed

    async def finish(self, ctx: RequestContext, completion: Completion, status: int) -> None:
        """Called once per answered request: metrics now, stage callbacks in the background."""
        await ctx.settle(completion)  # if the response ended early (error, cancellation)
        self._leave(ctx.endpoint)
        elapsed = time.perf_counter() - ctx.arrived
        metrics.labelled(metrics.REQUESTS, ctx.endpoint, ctx.model, completion.backend or "none", str(status)).inc()
        trace = ctx.trace
        if trace is not None:
            trace.finished(ctx, completion, status)
        metrics.labelled(metrics.REQUEST_DURATION, ctx.endpoint, ctx.model).observe(elapsed, metrics.exemplar(trace))
        if completion.duration is not None and not ctx.stream:
            metrics.labelled(metrics.OVERHEAD, ctx.endpoint).observe(max(0.0, elapsed - completion.duration))
        elif completion.from_cache:
            metrics.labelled(metrics.OVERHEAD, ctx.endpoint).observe(elapsed)
        if ctx.on_complete:
            task = asyncio.create_task(ctx.run_hooks(ctx.on_complete, completion))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def drain_background(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
