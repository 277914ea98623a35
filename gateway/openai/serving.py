"""Serving logic shared by the API endpoints: parse, describe the request, run the pipeline.

Each endpoint's `serving.py` names its schema, its API's `Dialect` (gateway/dialect.py: how the
pipeline reads, writes and translates that API) and how to read a request; none of them routes
or renders.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.context import RequestContext
from gateway.dialect import CHAT, Dialect
from gateway.openai.base import OpenAIBaseModel, parse_body
from gateway.pipeline import Pipeline

__all__ = ["Serving"]


class Serving:
    request_model: ClassVar[type[OpenAIBaseModel]]
    dialect: ClassVar[Dialect] = CHAT

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    async def handle(self, raw: bytes, request_id: str, headers: Any) -> Any:
        """Returns an ASGI response; raises `SwitchyardError` for anything refused before relaying."""
        body, parsed = parse_body(raw, self.request_model)
        ctx = RequestContext(
            request_id=request_id, endpoint=self.dialect.endpoint, body=body, headers=headers, dialect=self.dialect
        )
        ctx.model = str(getattr(parsed, "model", ""))
        self.describe(ctx, parsed)
        return await self.pipeline.run(ctx)

    def describe(self, ctx: RequestContext, parsed: Any) -> None:
        ctx.stream = bool(getattr(parsed, "stream", False))
        options = getattr(parsed, "stream_options", None)
        ctx.include_usage = bool(options is not None and options.include_usage)
