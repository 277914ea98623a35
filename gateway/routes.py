"""The one table of API routes: the edge serves them on the hot path (gateway/edge.py), and the
OpenAPI description is generated from them.

The API endpoints never reach FastAPI's router, so FastAPI holds only the operational routes
(models, health, readiness, metrics); `describe` adds the table's routes, with their request
schemas, to the document FastAPI generates for those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request

from gateway.anthropic.serving import CountTokensServing, MessagesServing
from gateway.openai.base import OpenAIBaseModel
from gateway.openai.chat.serving import ChatServing
from gateway.openai.completions.serving import CompletionServing
from gateway.openai.embeddings.serving import EmbeddingServing
from gateway.openai.responses.serving import ResponsesServing
from gateway.openai.serving import Serving
from gateway.types import Endpoint

if TYPE_CHECKING:
    from gateway.services import Services

__all__ = ["API_ROUTES", "ApiRoute", "allowed_methods", "describe", "route_for", "services"]


@dataclass(frozen=True)
class ApiRoute:
    path: str
    serving: type[Serving]
    summary: str
    method: str = "POST"

    @property
    def endpoint(self) -> Endpoint:
        return self.serving.dialect.endpoint

    @property
    def request_model(self) -> type[OpenAIBaseModel]:
        return self.serving.request_model


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("/v1/chat/completions", ChatServing, "Create a chat completion"),
    ApiRoute("/v1/completions", CompletionServing, "Create a completion (legacy)"),
    ApiRoute("/v1/embeddings", EmbeddingServing, "Create embeddings"),
    ApiRoute("/v1/responses", ResponsesServing, "Create a model response (Responses API)"),
    ApiRoute("/v1/messages", MessagesServing, "Create a message (Anthropic Messages API)"),
    ApiRoute("/v1/messages/count_tokens", CountTokensServing, "Count a message's input tokens (Anthropic)"),
)
_BY_PATH = {(r.method, r.path): r for r in API_ROUTES}


def route_for(method: str, path: str) -> ApiRoute | None:
    return _BY_PATH.get((method, path))


def allowed_methods(path: str) -> list[str]:
    """The methods the table serves on `path` (empty: not an API path)."""
    return [r.method for r in API_ROUTES if r.path == path]


def services(request: Request) -> Services:
    """The running gateway's services, for the FastAPI routes (set by the lifespan)."""
    return request.app.state.services  # type: ignore[no-any-return]


def describe(app: FastAPI, routes: tuple[ApiRoute, ...] = API_ROUTES) -> None:
    """Make `app.openapi()` include the table's routes alongside FastAPI's own."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for route in routes:
                document["paths"].setdefault(route.path, {})[route.method.lower()] = _operation(route)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operation(route: ApiRoute) -> dict[str, Any]:
    shape = (
        "the Anthropic shape {type: error, error: {type, message}}"
        if route.serving.dialect.api == "messages"
        else "the OpenAI shape {error: {message, type, param, code}}"
    )
    error = {"description": f"An error in {shape}"}
    return {
        "summary": route.summary,
        "operationId": route.endpoint.replace("/", "_"),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _request_schema(route.request_model)}},
        },
        "responses": {
            "200": {
                "description": "The response, or a stream of server-sent events when `stream` is true",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            "4XX": error,
            "5XX": error,
        },
    }


def _request_schema(model: type[OpenAIBaseModel]) -> dict[str, Any]:
    """The model's JSON schema, self-contained: nested models are written in place, since nothing
    registers them under the document's components."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return _inline(schema, definitions, ())  # type: ignore[no-any-return]


def _inline(node: Any, definitions: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
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
