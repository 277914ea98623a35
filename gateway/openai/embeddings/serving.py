"""POST /v1/embeddings serving: relayed as-is (float or base64 are the backend's to encode)."""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.dialect import EMBEDDINGS
from gateway.openai.embeddings.protocol import EmbeddingRequest
from gateway.openai.serving import Serving

__all__ = ["EmbeddingServing"]


class EmbeddingServing(Serving):
    dialect = EMBEDDINGS
    request_model = EmbeddingRequest

    def describe(self, ctx: RequestContext, parsed: Any) -> None:
        ctx.stream = False
