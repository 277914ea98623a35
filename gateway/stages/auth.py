"""Stage 1: who is asking. API key → tenant, and the priority class the request runs in."""

from __future__ import annotations

from gateway.auth import KeyStore
from gateway.context import RequestContext

__all__ = ["PRIORITY_HEADER", "Authenticate"]

PRIORITY_HEADER = "x-switchyard-priority"


class Authenticate:
    def __init__(self, keys: KeyStore):
        self.keys = keys

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.tenant = await self.keys.authenticate(ctx.headers.get("authorization"), ctx.headers.get("x-api-key"))
        ctx.priority = ctx.tenant.priority
        # A request may lower its own class to batch, never raise itself above its key's class.
        if ctx.headers.get(PRIORITY_HEADER, "").strip().lower() == "batch":
            ctx.priority = "batch"
        if ctx.trace is not None:
            ctx.trace.note({"switchyard.tenant": ctx.tenant.name, "switchyard.priority": ctx.priority})
