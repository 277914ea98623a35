"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.openai.embeddings.protocol import EmbeddingRequest
from gateway.openai.routing import openai_post_route

__all__ = ["attach_router"]


def attach_router(app: FastAPI) -> None:
    app.include_router(openai_post_route("/v1/embeddings", "embeddings", EmbeddingRequest))
