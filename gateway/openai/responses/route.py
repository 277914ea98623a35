"""GET /v1/responses/{id}, DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items:
stored responses, each tenant seeing only its own (another tenant's id is a 404)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request

from gateway.errors import NotFound
from gateway.routes import services
from gateway.types import JSON

__all__ = ["attach_router"]

router = APIRouter()


async def _record(request: Request, response_id: str) -> tuple[str, JSON]:
    svc = services(request)
    tenant = await svc.keys.authenticate(request.headers.get("authorization"))
    record = await svc.responses.get(tenant.name, response_id)
    if record is None:
        raise NotFound(f"No response found with id '{response_id}'.", param="response_id")
    return tenant.name, record


@router.get("/v1/responses/{response_id}", summary="Retrieve a stored response")
async def retrieve_response(response_id: str, request: Request) -> Any:
    _, record = await _record(request, response_id)
    return record["response"]


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    tenant, _ = await _record(request, response_id)
    await services(request).responses.delete(tenant, response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items", summary="List a stored response's input items")
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    _, record = await _record(request, response_id)
    items = list(record.get("input") or ())
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
