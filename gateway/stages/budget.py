"""Part of admission: price the request, hold its worst-case cost against its key's, team's and
tenant's budgets, and when it ends settle the real cost, export it and write the ledger row.

The settlement runs beside the response's last byte, not before it: until it lands the hold only
makes the budget look fuller than it is. So a reservation refused while its tenant has
settlements under way on this replica waits for them and asks once more: a client's next request
is never refused for a hold its last one no longer needs, and no other request waits on them."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from gateway import metrics
from gateway.admin.records import key_scope, team_scope, tenant_scope
from gateway.budgets import Counter, CountersUnavailable, Refusal, SpendCounters, counters_for
from gateway.completion import Completion
from gateway.context import RequestContext, Tenant
from gateway.errors import Overloaded, PermissionDenied, RateLimited
from gateway.ledger import Ledger, new_row_id
from gateway.pricing import Price, PriceTable
from gateway.settings import LimitSettings
from gateway.stages.admission import estimate_usage

__all__ = ["SpendGuard"]

log = logging.getLogger(__name__)

_WHOSE = {"key": "this key's", "team": "your team's", "tenant": "your organisation's"}


def _scopes(tenant: Tenant) -> list[tuple[str, str]]:
    scopes = []
    if tenant.key_id:
        scopes.append(("key", key_scope(tenant.key_id)))
    if tenant.team:
        scopes.append(("team", team_scope(tenant.name, tenant.team)))
    scopes.append(("tenant", tenant_scope(tenant.name)))
    return scopes


class SpendGuard:
    def __init__(
        self,
        prices: PriceTable,
        counters: SpendCounters,
        limits: LimitSettings,
        *,
        ledger: Ledger | None = None,
        label_limit: int = 200,
        fail_open: bool = False,
    ):
        self.fail_open = fail_open
        self.prices = prices
        self.counters = counters
        self.limits = limits
        self.ledger = ledger
        self._label_limit = label_limit
        self._labels: set[tuple[str, str]] = set()
        self._settling: dict[str, set[asyncio.Task[None]]] = {}  # tenant → settlements under way

    async def reserve(self, ctx: RequestContext) -> None:
        tenant = ctx.tenant
        price = self.prices.get(ctx.model)
        if price is None:
            if tenant.budgets:
                raise PermissionDenied(
                    f"No price is configured for the model '{ctx.model}', so its spend cannot be held to "
                    "a budget; ask the gateway's operator to add it to spend.prices.",
                    param="model",
                )
            return  # unpriced and unbudgeted: nothing to count
        prompt, output = estimate_usage(ctx.body, self.limits.default_output_tokens)
        worst = price.cost(prompt, output)
        budgets = {(b.scope, b.period): b.amount_usd for b in tenant.budgets}
        counters = counters_for(_scopes(tenant), budgets, time.time())
        reserved = 0.0
        if budgets:  # without a budget nothing needs holding: the real cost is added at the end
            refusal = await self._hold(counters, worst)
            pending = self._settling.get(tenant.name) if refusal is not None else None
            if pending:
                # Finished requests may still hold their worst case: let them settle, then ask again.
                # Waiting only here keeps settlements off every other request's path.
                await asyncio.gather(*pending, return_exceptions=True)
                refusal = await self._hold(counters, worst)
            if refusal is not None:
                self._refuse(refusal.counter, refusal.used, worst)
            reserved = worst
        ctx.settlers.append(lambda done: self._start_settle(ctx, counters, price, reserved, worst, done))

    async def _hold(self, counters: list[Counter], worst: float) -> Refusal | None:
        try:
            return await self.counters.reserve(counters, worst)
        except CountersUnavailable as exc:
            if not self.fail_open:
                raise Overloaded(
                    "Spend cannot be checked against your budget right now; retry shortly.", retry_after=1.0
                ) from None
            log.warning("spend counters unavailable (%s): letting a budgeted request through", exc)
            return None

    def _start_settle(
        self, ctx: RequestContext, counters: list[Counter], price: Price, reserved: float, worst: float,
        done: Completion,
    ) -> None:  # fmt: skip
        task = asyncio.ensure_future(self._settle(ctx, counters, price, reserved, worst, done))
        name = ctx.tenant.name
        group = self._settling.setdefault(name, set())
        group.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            group.discard(t)
            if not group and self._settling.get(name) is group:
                del self._settling[name]

        task.add_done_callback(finished)

    async def drain(self) -> None:
        """Wait for every settlement under way (before shutdown, or when a reload retires this)."""
        pending = [t for group in self._settling.values() for t in group]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    def _refuse(counter: Counter, used: float, cost: float) -> None:
        metrics.labelled(metrics.BUDGET_REFUSED, counter.level, counter.period).inc()
        reset = dt.datetime.fromtimestamp(counter.reset_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert counter.limit is not None
        raise RateLimited(
            f"This request could cost up to ${cost:.6f}, which would pass {_WHOSE[counter.level]} "
            f"{counter.period} budget of ${counter.limit:.6f} (${used:.6f} spent or held). "
            f"The budget resets at {reset}.",
            retry_after=max(1.0, counter.reset_at - time.time()),
            code="budget_exceeded",
            headers={"x-switchyard-budget-reset": reset},
        )

    async def _settle(
        self, ctx: RequestContext, counters: list[Counter], price: Price, reserved: float, worst: float,
        done: Completion,
    ) -> None:  # fmt: skip
        if done.from_cache:
            actual, outcome = 0.0, "cache"
        elif done.prompt_tokens is not None or done.completion_tokens is not None:
            actual = price.cost(done.prompt_tokens or 0, done.completion_tokens or 0, done.cached_tokens or 0)
            outcome = "ok" if done.ok else "failed"
        elif done.backend is None:
            actual, outcome = 0.0, "refused"  # never reached a backend
        else:
            actual, outcome = worst, "unknown_usage"  # the upstream may have billed it all
        await self.counters.settle(counters, reserved, actual)
        tenant = ctx.tenant
        if actual:
            metrics.labelled(metrics.SPEND, *self._label(tenant.name, tenant.team or "")).inc(actual)
        if self.ledger is not None and outcome != "refused":
            self.ledger.append((
                new_row_id(), time.time(), ctx.request_id, tenant.key_id, tenant.name, tenant.team, ctx.model,
                done.backend, done.prompt_tokens, done.cached_tokens, done.completion_tokens, actual, outcome,
            ))  # fmt: skip

    def _label(self, tenant: str, team: str) -> tuple[str, str]:
        pair = (tenant, team)
        if pair in self._labels:
            return pair
        if len(self._labels) < self._label_limit:
            self._labels.add(pair)
            return pair
        return ("other", "other")
