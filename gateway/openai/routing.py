"""Route helpers: the typed way to reach the app's services, and request-body docs for OpenAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.openai.base import OpenAIBaseModel

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = ["body_schema", "openai_post_route", "services"]


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def body_schema(model: type[OpenAIBaseModel]) -> dict[str, Any]:
    """Routes read the raw body themselves (to pass unknown fields through untouched); this puts
    the schema into the OpenAPI description anyway, self-contained: the nested models are written
    in place, since nothing registers them under the document's components."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions, ())}},
        }
    }


def _inline(node: Any, definitions: dict[str, Any], seen: tuple[str, ...]) -> Any:
    """`node` with every `#/$defs/…` reference replaced by the definition it names."""
    if isinstance(node, list):
        return [_inline(v, definitions, seen) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.rsplit("/", 1)[1]
        if name in seen:
            raise ValueError(f"{name} refers to itself; a request schema cannot be written in place")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(definitions[name], definitions, (*seen, name)), **_inline(siblings, definitions, seen)}
    return {k: _inline(v, definitions, seen) for k, v in node.items()}


def openai_post_route(path: str, serving: str, model: type[OpenAIBaseModel]) -> APIRouter:
    """A FastAPI route for one OpenAI POST endpoint. In the running gateway the edge serves these
    paths before FastAPI sees them (gateway/edge.py); the route gives the OpenAPI description its
    request schema and serves the same objects when the FastAPI app is used on its own."""
    router = APIRouter()

    @router.post(path, openapi_extra=body_schema(model), name=serving)
    async def endpoint(request: Request) -> Response:
        handler = getattr(services(request), serving)
        return await handler.handle(await request.body(), request.state.request_id, request.headers)  # type: ignore[no-any-return]

    return router
