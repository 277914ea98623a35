"""GET /v1/models and GET /v1/models/{model}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from gateway.errors import UnknownModel
from gateway.routes import services

__all__ = ["attach_router"]

router = APIRouter()


def _card(model: str, owners: list[str]) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": ",".join(owners) or "switchyard"}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    svc = services(request)
    await svc.keys.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    registry = svc.registry
    return {"object": "list", "data": [_card(m, [b.name for b in registry.candidates(m)]) for m in registry.models()]}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    svc = services(request)
    await svc.keys.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
    registry = svc.registry
    if model not in registry.models():
        raise UnknownModel(model, registry.models())
    return _card(model, [b.name for b in registry.candidates(model)])


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
