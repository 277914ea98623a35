"""The request pipeline: run the stages in order, then relay. This module only composes.

A stage returns None to let the request go on, or a `Completion` when it answered the request
itself (a cache hit); refusals are raised as errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import orjson

from gateway import metrics
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import SwitchyardError
from gateway.relay import Relay
from gateway.responses import ASGIResponse, JSONBytesResponse, RelayResponse, SSEReplayResponse, replay_events
from gateway.types import JSON

__all__ = ["Pipeline", "Stage"]

log = logging.getLogger(__name__)

Stage = Callable[[RequestContext], Awaitable[Completion | None]]


class Pipeline:
    def __init__(self, stages: Sequence[Stage], relay: Relay, *, embedder: Any = None, embed_timeout: float = 1.0):
        self.stages = list(stages)
        self.relay = relay
        self.embedder = embedder
        self.embed_timeout = embed_timeout
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, ctx: RequestContext) -> Any:
        if self.embedder is not None:
            ctx.embed = self._memoised_embed()
        metrics.labelled(metrics.IN_FLIGHT, ctx.endpoint).inc()
        try:
            for stage in self.stages:
                answer = await stage(ctx)
                if answer is not None:
                    return self._answered(ctx, answer)
        except BaseException as exc:
            metrics.labelled(metrics.IN_FLIGHT, ctx.endpoint).dec()
            if ctx.on_complete:  # refused part-way: stages that waited for an outcome must hear of it
                error = exc if isinstance(exc, SwitchyardError) else None
                await ctx.run_hooks(ctx.on_complete, Completion(ctx.endpoint, ctx.model, None, ok=False, error=error))
            raise
        return RelayResponse(self.relay, ctx, self._upstream_body(ctx), self.finish, assemble=ctx.capture)

    def _answered(self, ctx: RequestContext, answer: Completion) -> ASGIResponse:
        """A stage answered without a backend (a cache hit): send it in the shape the client asked for."""
        assert answer.response is not None
        if ctx.stream:
            events = replay_events(answer.response, include_usage=ctx.include_usage)
            return SSEReplayResponse(ctx, events, self.finish, answer)
        return JSONBytesResponse(ctx, orjson.dumps(answer.response), self.finish, answer)

    @staticmethod
    def _upstream_body(ctx: RequestContext) -> JSON:
        if not ctx.stream:
            return ctx.upstream_body if ctx.upstream_body is not None else ctx.body
        body = ctx.outgoing_body()
        # Always ask for usage so tokens are counted; the relay strips it if the client did not ask.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body

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
        metrics.labelled(metrics.IN_FLIGHT, ctx.endpoint).dec()
        elapsed = time.perf_counter() - ctx.arrived
        metrics.labelled(metrics.REQUESTS, ctx.endpoint, ctx.model, completion.backend or "none", str(status)).inc()
        metrics.labelled(metrics.REQUEST_DURATION, ctx.endpoint, ctx.model).observe(elapsed)
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
