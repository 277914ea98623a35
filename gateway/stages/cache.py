"""Stage: answer from the response cache, or arrange for the answer to be stored.

`Cache-Control: no-cache` skips the lookup but stores the answer; `no-store` does neither. The
outcome is reported in `x-switchyard-cache` (and the similarity of a semantic hit). Identical
cacheable requests that arrive while the first is still being answered wait for it and share its
answer (single flight), so a thundering herd costs one backend call. A sample of hits
(`cache.verify_sample_rate`) is re-asked of the backend in the background to measure the live
false-hit rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from cache import CacheLookup, ResponseCache
from gateway import metrics
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import SwitchyardError
from gateway.relay import Relay
from gateway.types import JSON

__all__ = ["CACHE_HEADER", "CacheStage"]

log = logging.getLogger(__name__)

CACHE_HEADER = "x-switchyard-cache"
SIMILARITY_HEADER = "x-switchyard-cache-similarity"
REASON_HEADER = "x-switchyard-cache-reason"  # why a miss or bypass: ineligible, below_threshold, guard:…


class CacheStage:
    def __init__(self, cache: ResponseCache, relay: Relay, *, coalesce_timeout: float = 120.0):
        self.cache = cache
        self.relay = relay
        self.coalesce_timeout = coalesce_timeout
        # Single flight: identical cacheable requests in flight share the first one's answer, or
        # its error (None: it went away without either, and a follower takes over).
        self._leaders: dict[tuple[str, str], asyncio.Future[JSON | SwitchyardError | None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def __call__(self, ctx: RequestContext) -> Completion | None:
        # Keyed and stored in chat completions form (the canonical request and answer), whichever
        # API the client called; a hit is answered in the client's API.
        request = ctx.canonical if ctx.endpoint not in ("completions", "embeddings") else None
        if request is None:
            return None
        control = ctx.headers.get("cache-control", "").lower()
        lookup = await self.cache.lookup(
            ctx.tenant.name,
            request,
            ctx.embed,
            intent=ctx.intent,
            no_cache="no-cache" in control,
            no_store="no-store" in control,
        )
        ctx.response_headers[CACHE_HEADER] = lookup.status
        if ctx.trace is not None:
            ctx.trace.note({
                "switchyard.cache.verdict": lookup.status,
                "switchyard.cache.layer": lookup.status if lookup.hit else None,
                "switchyard.cache.similarity": lookup.similarity,
                "switchyard.cache.score": lookup.score,
                "switchyard.cache.reason": lookup.reason,
            })
        if lookup.reason:
            ctx.response_headers[REASON_HEADER] = lookup.reason
        if lookup.hit and lookup.response is not None:
            if lookup.similarity is not None and lookup.status == "semantic":
                ctx.response_headers[SIMILARITY_HEADER] = f"{lookup.similarity:.4f}"
            if self.cache.should_verify(lookup):
                self._spawn(self._verify(ctx, lookup))
            return _answer(ctx, lookup.response)
        if not lookup.storable:
            return None
        key = (ctx.tenant.name, lookup.exact_key) if lookup.exact_key else None
        while key is not None and (flight := self._leaders.get(key)) is not None:
            try:
                shared = await asyncio.wait_for(asyncio.shield(flight), self.coalesce_timeout)
            except TimeoutError:
                break  # too slow: go on alone
            if isinstance(shared, SwitchyardError):
                # The identical request failed: so would this one. Sending it to the same failing
                # backend as well would turn a herd into a stampede.
                raise _same_error(shared)
            if shared is not None:
                metrics.labelled(metrics.COALESCED, ctx.endpoint).inc()
                if ctx.trace is not None:
                    ctx.trace.note({"switchyard.cache.verdict": "exact", "switchyard.cache.reason": "coalesced"})
                ctx.response_headers[CACHE_HEADER] = "exact"
                ctx.response_headers[REASON_HEADER] = "coalesced"
                return _answer(ctx, shared)
            # Its client left before the answer came: the first follower to wake leads now, and
            # the others follow it.
        ctx.capture = True
        if key is not None and key not in self._leaders:
            leader: asyncio.Future[JSON | SwitchyardError | None] = asyncio.get_running_loop().create_future()
            self._leaders[key] = leader
            ctx.on_complete.append(lambda done: self._lead(key, leader, _as_chat(ctx, done)))
        ctx.on_complete.append(lambda done: self._store(lookup, _as_chat(ctx, done)))
        return None

    def _lead(
        self, key: tuple[str, str], leader: asyncio.Future[JSON | SwitchyardError | None], done: Completion
    ) -> None:
        if self._leaders.get(key) is leader:
            del self._leaders[key]
        if not leader.done():
            ok = done.ok and not done.cancelled and done.response is not None
            leader.set_result(done.response if ok else None if done.cancelled else done.error)

    async def _store(self, lookup: CacheLookup, done: Completion) -> None:
        # Only whole, successful answers: not errors, not streams the client abandoned.
        if done.ok and not done.cancelled and done.response is not None:
            await self.cache.store(lookup, done.response)

    async def _verify(self, ctx: RequestContext, lookup: CacheLookup) -> None:
        """Ask the backend the same question and tell the cache whether the answers agree."""
        sent = ctx.upstream_body if ctx.upstream_body is not None else ctx.body
        probe = RequestContext(
            request_id=ctx.request_id + "-verify",
            endpoint=ctx.endpoint,
            body={**sent, "stream": False},
            headers=ctx.headers,
            tenant=ctx.tenant,
            priority="batch",
            model=ctx.model,
            dialect=ctx.dialect,
            trace=None,  # background work of the gateway's own, not part of the client's trace
        )
        try:
            async with self.relay.attempt(probe, probe.body) as attempt:
                fresh = attempt.response_json
                if fresh is not None:
                    fresh = ctx.dialect.as_chat_answer(fresh)
        except SwitchyardError as exc:
            log.debug("cache verification skipped: %s", exc.message)
            return
        if fresh is None:
            return
        await self.cache.verify(lookup, fresh)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _same_error(error: SwitchyardError) -> SwitchyardError:
    """A follower's own copy of the error its leader got (status, type, code, Retry-After)."""
    copy = SwitchyardError(error.message, param=error.param, code=error.code, headers=error.headers)
    copy.status, copy.type = error.status, error.type
    return copy


def _as_chat(ctx: RequestContext, done: Completion) -> Completion:
    """The completion with its answer in chat completions form (what the cache keeps)."""
    if done.response is None or ctx.dialect.api == "chat":
        return done
    return replace(done, response=ctx.dialect.as_chat_answer(done.response))


def _answer(ctx: RequestContext, stored: JSON) -> Completion:
    """A stored chat.completion as the answer in the client's API."""
    # A fresh id and timestamp: clients may rely on ids being unique per response.
    chat = {**stored, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
    response = ctx.dialect.from_chat_answer(chat, ctx.body)
    prompt, completion = ctx.dialect.usage_of(response)
    return Completion(
        ctx.endpoint,
        ctx.model,
        None,
        ok=True,
        response=response,
        prompt_tokens=prompt,
        completion_tokens=completion,
        finish_reason=ctx.dialect.finish_reason(response),
        from_cache=True,
    )
