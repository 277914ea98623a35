"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

from gateway.openai.chat.protocol import ChatCompletionRequest
from gateway.openai.routing import body_schema, services

__all__ = ["attach_router"]

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=body_schema(ChatCompletionRequest))
async def create_chat_completion(request: Request) -> Response:
    svc = services(request)
    return await svc.chat.handle(await request.body(), request.state.request_id, request.headers)  # type: ignore[no-any-return]


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
