"""POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

from gateway.openai.completions.protocol import CompletionRequest
from gateway.openai.routing import body_schema, services

__all__ = ["attach_router"]

router = APIRouter()


@router.post("/v1/completions", openapi_extra=body_schema(CompletionRequest))
async def create_completion(request: Request) -> Response:
    svc = services(request)
    return await svc.completions.handle(await request.body(), request.state.request_id, request.headers)  # type: ignore[no-any-return]


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
