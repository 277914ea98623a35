"""`create_app(settings)`: the FastAPI application. Nothing happens at import time; the lifespan
builds the `Services` and closes them again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from gateway import metrics
from gateway.admin.api import attach_admin
from gateway.drain import DrainState
from gateway.edge import Edge
from gateway.errors import BadRequest, SwitchyardError, render_error
from gateway.openai.models.route import attach_router as attach_models
from gateway.openai.responses.route import attach_router as attach_responses
from gateway.reload import ConfigReloader
from gateway.routes import describe, route_for, services
from gateway.services import build_services
from gateway.settings import Settings, SettingsSource

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _error_response(exc: SwitchyardError) -> Response:
    status, headers, body = render_error(exc)
    return Response(body, status_code=status, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})


def _endpoint_of(request: Request) -> str:
    route = route_for(request.method, request.url.path)
    return route.endpoint if route is not None else "other"


async def _on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchyardError)
    metrics.REQUESTS.labels(_endpoint_of(request), "unknown", "none", str(exc.status)).inc()
    return _error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = {404: f"Unknown path {request.url.path}", 405: f"Method {request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    err = SwitchyardError(message, code="not_found" if exc.status_code == 404 else None)
    err.status, err.type = exc.status_code, "invalid_request_error"
    return _error_response(err)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    return _error_response(BadRequest("The request parameters are invalid."))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    err = SwitchyardError("The gateway hit an internal error; it has been logged.")
    return _error_response(err)


def create_app(settings: Settings, *, drain: DrainState | None = None, source: SettingsSource | None = None) -> Edge:
    """The ASGI app to serve: the edge (request ids, drain, body limit, the hot endpoints) in front
    of FastAPI (everything else). With `source`, SIGHUP or a change to its file reloads the
    configuration (gateway/reload.py)."""
    drain_state = drain or DrainState()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, drain_state)
        app.state.services = edge.services = services
        reloader = None
        if source is not None:
            reloader = app.state.reloader = ConfigReloader(services, source)
            reloader.start(watch=settings.server.watch_config)
        try:
            yield
        finally:
            if reloader is not None:
                await reloader.aclose()
            await services.aclose()

    app = FastAPI(
        title="Switchyard",
        version="0.1.0",
        description="An LLM serving gateway that speaks the OpenAI API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    attach_models(app)
    attach_admin(app)
    attach_responses(app)
    describe(app)
    _attach_operational_routes(app)

    app.add_exception_handler(SwitchyardError, _on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    edge = Edge(app, drain_state, settings.server.max_body_bytes)
    return edge


def _attach_operational_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        ready, detail = services(request).readiness()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)
