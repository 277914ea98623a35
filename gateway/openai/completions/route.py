"""POST /v1/completions."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.openai.completions.protocol import CompletionRequest
from gateway.openai.routing import openai_post_route

__all__ = ["attach_router"]


def attach_router(app: FastAPI) -> None:
    app.include_router(openai_post_route("/v1/completions", "completions", CompletionRequest))
