"""Stage: narrow a large `tools` list to the tools that match the request's intent.

The router reads tools in the canonical (chat completions) form; the kept tools are the request's
own definitions, byte for byte, whatever API it came in, so the model's calls need no
translation. Tool calls seen in the answer (streamed or not) are fed back to the router.
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
        # The router reads the canonical (chat completions) form; what goes upstream is the
        # client's own tool definitions, in its API's shape, byte for byte.
        own = ctx.body.get("tools")
        request = ctx.canonical if own and ctx.endpoint not in ("completions", "embeddings") else None
        if request is None or own is None:
            return None
        tools = request.get("tools") or []
        if len(tools) != len(own):
            return None
        messages = request["messages"]
        vector = None
        if self.settings.enabled and len(tools) > self.settings.threshold and ctx.embed is not None and ctx.intent:
            vector = await ctx.embed(ctx.intent)  # the cache asked for the same text: one embedding
        narrowing = await self.router.narrow(
            ctx.tenant.name, tools, messages, request.get("tool_choice"), vector, intent=ctx.intent
        )
        ctx.response_headers[TOOLS_HEADER] = narrowing.header
        if ctx.trace is not None:
            ctx.trace.note(
                {
                    "switchyard.tools.in": narrowing.tools_in,
                    "switchyard.tools.out": narrowing.tools_out,
                    "switchyard.tools.band": narrowing.band,
                    "switchyard.tools.confidence": narrowing.confidence if narrowing.band is not None else None,
                    "switchyard.tools.reason": narrowing.reason,
                    "switchyard.tools.narrowed": narrowing.narrowed,
                    "switchyard.tools.shadow": narrowing.shadow or None,
                }
            )
        if narrowing.narrowed:
            kept = {id(t) for t in narrowing.tools}
            ctx.outgoing_body()["tools"] = [mine for mine, chat in zip(own, tools, strict=True) if id(chat) in kept]
        if narrowing.catalogue is not None:
            ctx.capture = True
            ctx.on_complete.append(lambda done: self._learn(ctx, narrowing, done))
        return None

    def _learn(self, ctx: RequestContext, narrowing: Narrowing, done: Completion) -> None:
        if done.ok and not done.from_cache:
            called = ctx.dialect.called_tools(done.response) if done.response else []
            if called:
                self.router.observe(ctx.tenant.name, narrowing, called)
