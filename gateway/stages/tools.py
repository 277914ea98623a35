"""Stage: narrow a large `tools` list to the tools that match the request's intent.

The kept tools are the request's own definitions, byte for byte, so the model's `tool_calls` need
no translation. Tool calls seen in the answer (streamed or not) are fed back to the router.
"""

from __future__ import annotations

from gateway.completion import Completion
from gateway.context import RequestContext
from router import Narrowing, RouterSettings, ToolRouter

__all__ = ["TOOLS_HEADER", "ToolStage"]

TOOLS_HEADER = "x-switchyard-tools"


class ToolStage:
    def __init__(self, router: ToolRouter, settings: RouterSettings):
        self.router = router
        self.settings = settings

    async def __call__(self, ctx: RequestContext) -> Completion | None:
        tools = ctx.body.get("tools")
        if ctx.endpoint != "chat/completions" or not tools:
            return None
        messages = ctx.body["messages"]
        vector = None
        if self.settings.enabled and len(tools) > self.settings.threshold and ctx.embed is not None:
            vector = await ctx.embed(self.router.intent_text(messages))
        narrowing = await self.router.narrow(ctx.tenant.name, tools, messages, ctx.body.get("tool_choice"), vector)
        ctx.response_headers[TOOLS_HEADER] = narrowing.header
        if narrowing.narrowed:
            ctx.outgoing_body()["tools"] = narrowing.tools
        if narrowing.catalogue is not None:
            ctx.capture = True
            ctx.on_complete.append(lambda done: self._learn(ctx, narrowing, done))
        return None

    def _learn(self, ctx: RequestContext, narrowing: Narrowing, done: Completion) -> None:
        if done.ok and not done.from_cache:
            called = done.tool_calls
            if called:
                self.router.observe(ctx.tenant.name, narrowing, called)
