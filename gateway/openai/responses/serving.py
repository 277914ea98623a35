"""POST /v1/responses serving: passed through to backends that speak Responses, translated to chat
for the others (gateway/openai/responses/translate.py)."""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.openai.responses.dialect import RESPONSES
from gateway.openai.responses.protocol import ResponsesRequest
from gateway.openai.serving import Serving

__all__ = ["ResponsesServing"]


class ResponsesServing(Serving):
    dialect = RESPONSES
    request_model = ResponsesRequest

    def describe(self, ctx: RequestContext, parsed: Any) -> None:
        ctx.stream = bool(parsed.stream)
        ctx.include_usage = True  # a Responses stream always ends with its usage
