"""Stage 2: may this request run now? Model access, tenant limits and latency-protecting shedding."""

from __future__ import annotations

from typing import Any

from gateway import metrics
from gateway.backends.registry import BackendRegistry
from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import Overloaded, PermissionDenied, RateLimited
from gateway.limits import RateLimiter
from gateway.relay import Relay
from gateway.settings import LimitSettings

__all__ = ["Admit", "estimate_tokens"]

_CHARS_PER_TOKEN = 4


def estimate_tokens(body: dict[str, Any], default_output: int) -> int:
    """Prompt tokens (about four characters each) plus the output the request may produce."""
    if "messages" in body:
        chars = 0
        for m in body.get("messages") or ():
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
        prompt = chars // _CHARS_PER_TOKEN + 4 * len(body.get("messages") or ())
    else:
        source = body.get("prompt", body.get("input", ""))
        prompt = len(str(source)) // _CHARS_PER_TOKEN + 1
    output = body.get("max_completion_tokens") or body.get("max_tokens")
    if "input" in body:  # embeddings produce no tokens
        output = 0
    elif not isinstance(output, int):
        output = default_output
    return int(prompt + output)


class Admit:
    def __init__(self, registry: BackendRegistry, limiter: RateLimiter, relay: Relay, limits: LimitSettings):
        self.registry = registry
        self.limiter = limiter
        self.relay = relay
        self.limits = limits

    async def __call__(self, ctx: RequestContext) -> None:
        self.registry.check_model(ctx.model)
        tenant = ctx.tenant
        if tenant.models is not None and ctx.model not in tenant.models:
            raise PermissionDenied(f"This key may not use the model '{ctx.model}'.", param="model")
        self._shed(ctx)
        if tenant.rpm or tenant.tpm:
            await self._limit(ctx)

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
        cost = estimate_tokens(ctx.body, self.limits.default_output_tokens)
        decision = await self.limiter.reserve(tenant.name, tenant.rpm, tenant.tpm, cost)
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
            used = estimate_tokens({**ctx.body, "max_tokens": 0}, 0)  # failed early: charge the prompt
        await self.limiter.settle(ctx.tenant.name, ctx.tenant.tpm, used - ctx.reserved_tokens)
