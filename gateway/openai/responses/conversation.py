"""Stage: the Responses API's conversation state.

A request with `previous_response_id` continues that stored response's conversation: its history
(earlier input and output items) goes upstream ahead of the new input, so every backend, native or
translated, sees the whole conversation and the gateway alone holds the state. A request with
`store` (default true) has its response stored, before the client's last byte goes out, so the
next turn can name it at once.
"""

from __future__ import annotations

import logging

from gateway.completion import Completion
from gateway.context import RequestContext
from gateway.errors import NotFound
from gateway.openai.responses.store import ResponseStore
from gateway.openai.responses.translate import input_items, new_id
from gateway.types import JSON

__all__ = ["ConversationStage", "listed_item"]

log = logging.getLogger(__name__)

_CONTEXT_ITEMS = {"message", "function_call", "function_call_output", "reasoning"}


def listed_item(item: JSON) -> JSON:
    """An input item as `input_items` lists it: with an id, and message content as parts."""
    out = {**item, "id": item.get("id") or new_id("msg" if item.get("type", "message") == "message" else "item")}
    if out.get("type", "message") == "message":
        out["type"] = "message"
        content = out.get("content")
        if isinstance(content, str):
            kind = "output_text" if out.get("role") == "assistant" else "input_text"
            out["content"] = [{"type": kind, "text": content}]
    return out


class ConversationStage:
    def __init__(self, store: ResponseStore):
        self.store = store

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.endpoint != "responses":
            return
        body = ctx.body
        own = [listed_item(i) for i in input_items(body)]
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if previous:
            record = await self.store.get(ctx.tenant.name, previous)
            if record is None:
                raise NotFound(f"Previous response with id '{previous}' not found.", param="previous_response_id")
            history = list(record.get("history") or ())
            upstream = ctx.outgoing_body()
            upstream["input"] = [*history, *input_items(body)]
            del upstream["previous_response_id"]  # the upstream holds no state of ours
        if body.get("store") is not False:
            ctx.settlers.append(lambda done: self._store(ctx, own, history, done))

    async def _store(self, ctx: RequestContext, own: list[JSON], history: list[JSON], done: Completion) -> None:
        response = done.response
        if not done.ok or done.cancelled or not isinstance(response, dict) or not response.get("id"):
            return
        previous = ctx.body.get("previous_response_id")
        if previous:
            response = {**response, "previous_response_id": previous}
        output = [i for i in response.get("output") or () if isinstance(i, dict) and i.get("type") in _CONTEXT_ITEMS]
        record = {"response": response, "input": own, "history": [*history, *own, *output]}
        await self.store.put(ctx.tenant.name, str(response["id"]), record)
