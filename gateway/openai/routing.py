"""Route helpers: the typed way to reach the app's services, and request-body docs for OpenAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from gateway.openai.base import OpenAIBaseModel

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = ["body_schema", "services"]


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def body_schema(model: type[OpenAIBaseModel]) -> dict[str, Any]:
    """Routes read the raw body themselves (to pass unknown fields through untouched); this puts
    the schema into the OpenAPI description anyway."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}
            },
        }
    }
