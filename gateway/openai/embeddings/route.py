"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

from gateway.openai.embeddings.protocol import EmbeddingRequest
from gateway.openai.routing import body_schema, services

__all__ = ["attach_router"]

router = APIRouter()


@router.post("/v1/embeddings", openapi_extra=body_schema(EmbeddingRequest))
async def create_embeddings(request: Request) -> Response:
    svc = services(request)
    return await svc.embeddings.handle(await request.body(), request.state.request_id, request.headers)  # type: ignore[no-any-return]


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
