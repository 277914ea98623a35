"""Stage 2: may this request run now? Model access, tenant limits and latency-protecting shedding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gateway import metrics
from gateway.backends.registry import BackendRegistry
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import Overloaded, PermissionDenied, RateLimited
from gateway.limits import RateLimiter
from gateway.relay import Relay
from gateway.settings import LimitSettings

if TYPE_CHECKING:
    from gateway.stages.budget import SpendGuard

__all__ = ["Admit", "estimate_tokens", "estimate_usage"]

_PER_MESSAGE = 4  # role and separators a chat template adds around each message


def _text_size(value: Any, per_token: int) -> int:
    if isinstance(value, str):
        return len(value.encode()) if per_token == 1 else len(value) // per_token
    if isinstance(value, list):
        return sum(_text_size(part.get("text", "") if isinstance(part, dict) else part, per_token) for part in value)
    return 0


def estimate_tokens(body: dict[str, Any], default_output: int, *, upper_bound: bool = True) -> int:
    """Tokens a request may use: its prompt plus the output it may produce (`estimate_usage`)."""
    prompt, output = estimate_usage(body, default_output, upper_bound=upper_bound)
    return prompt + output


def estimate_usage(body: dict[str, Any], default_output: int, *, upper_bound: bool = True) -> tuple[int, int]:
    """(prompt tokens, output tokens) a request may use.

    With `upper_bound` the prompt counts one token per UTF-8 byte (tool definitions included),
    which no byte-level tokenizer exceeds; the reservation is settled against real usage when
    the request ends, so over-reserving costs nothing but headroom. Without it, four characters
    a token: closer on English, but requests admitted together can each overrun their share.
    """
    per_token = 1 if upper_bound else 4
    if "messages" in body:
        messages = body.get("messages") or ()
        prompt = sum(_text_size(m.get("content"), per_token) for m in messages if isinstance(m, dict))
        prompt += _PER_MESSAGE * len(messages)
        prompt += _text_size(body.get("system"), per_token)  # Messages' system prompt, a string or blocks
        if body.get("tools"):
            prompt += len(orjson.dumps(body["tools"])) // per_token
    else:
        prompt = _text_size(body.get("prompt", body.get("input", "")), per_token) + 1
    output = body.get("max_completion_tokens") or body.get("max_tokens")
    if "input" in body:  # embeddings produce no tokens
        output = 0
    elif not isinstance(output, int):
        output = default_output
    return int(prompt), int(output)


def _estimated(ctx: RequestContext) -> dict[str, Any]:
    """The body whose tokens are estimated: the canonical (chat) form, history included; a request
    without one counts as its whole body of prompt."""
    if ctx.endpoint in ("completions", "embeddings"):
        return ctx.body
    canonical = ctx.canonical
    if canonical is not None:
        return canonical
    body = ctx.upstream_body if ctx.upstream_body is not None else ctx.body
    return {"messages": [{"content": orjson.dumps(body).decode()}]}


class Admit:
    def __init__(
        self,
        registry: BackendRegistry,
        limiter: RateLimiter,
        relay: Relay,
        limits: LimitSettings,
        spend: SpendGuard | None = None,
    ):
        self.registry = registry
        self.limiter = limiter
        self.relay = relay
        self.limits = limits
        self.spend = spend

    async def __call__(self, ctx: RequestContext) -> None:
        self.registry.check_model(ctx.model)
        tenant = ctx.tenant
        if tenant.models is not None and ctx.model not in tenant.models:
            raise PermissionDenied(f"This key may not use the model '{ctx.model}'.", param="model")
        self._shed(ctx)
        # Money first: when the rate limit then refuses, the hold is released (below).
        if self.spend is not None:
            await self.spend.reserve(ctx)
        if tenant.rpm or tenant.tpm:
            try:
                await self._limit(ctx)
            except RateLimited as refused:
                await ctx.settle(Completion(ctx.endpoint, ctx.model, None, ok=False, error=refused))
                raise
        if ctx.trace is not None:
            ctx.trace.note(
                {
                    "switchyard.admission.rpm": tenant.rpm,
                    "switchyard.admission.tpm": tenant.tpm,
                    "switchyard.admission.reserved_tokens": ctx.reserved_tokens or None,
                }
            )

    def _shed(self, ctx: RequestContext) -> None:
        """Refuse work whose predicted wait breaks its class's budget; batch goes first, so that
        interactive traffic keeps its time to first token."""
        if ctx.endpoint == "embeddings":
            return
        predicted = self.relay.predicted_ttft(ctx.model)
        if predicted is None:
            return
        budgets = self.relay.settings.ttft_budget
        interactive = budgets.get("interactive", float("inf"))
        limit = (
            interactive
            if ctx.priority == "interactive"
            else min(budgets.get("batch", float("inf")), interactive * self.relay.settings.batch_shed_fraction)
        )
        if predicted > limit:
            metrics.labelled(metrics.SHED, ctx.priority, "ttft_budget").inc()
            raise Overloaded(
                f"The predicted wait for '{ctx.model}' ({predicted:.2f}s) exceeds the {ctx.priority} budget; "
                "retry later.",
                retry_after=predicted,
            )

    async def _limit(self, ctx: RequestContext) -> None:
        tenant = ctx.tenant
        cost = estimate_tokens(
            _estimated(ctx), self.limits.default_output_tokens, upper_bound=self.limits.prompt_estimate == "bytes"
        )
        decision = await self.limiter.reserve(tenant.bucket, tenant.rpm, tenant.tpm, cost)
        headers = decision.headers(tenant.rpm, tenant.tpm)
        if not decision.allowed:
            metrics.labelled(metrics.RATE_LIMITED, "requests_or_tokens").inc()
            raise RateLimited(
                "Rate limit reached for your key; retry after the time in the Retry-After header.",
                retry_after=decision.retry_after,
                headers=headers,
            )
        ctx.response_headers.update(headers)
        ctx.reserved_tokens = cost
        if tenant.tpm:
            ctx.settlers.append(lambda done: self._settle(ctx, done))

    async def _settle(self, ctx: RequestContext, done: Completion) -> None:
        if done.from_cache:
            used = 0  # answered without upstream tokens
        elif done.prompt_tokens is not None or done.completion_tokens is not None:
            used = (done.prompt_tokens or 0) + (done.completion_tokens or 0)
        elif done.ok:
            return  # usage unknown: the reservation stands
        else:
            used = estimate_tokens(
                {**_estimated(ctx), "max_tokens": 0}, 0, upper_bound=False
            )  # failed: charge the prompt
        await self.limiter.settle(ctx.tenant.bucket, ctx.tenant.tpm, used - ctx.reserved_tokens)
