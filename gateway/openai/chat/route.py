"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.openai.chat.protocol import ChatCompletionRequest
from gateway.openai.routing import openai_post_route

__all__ = ["attach_router"]


def attach_router(app: FastAPI) -> None:
    app.include_router(openai_post_route("/v1/chat/completions", "chat", ChatCompletionRequest))
