"""The whole gateway app in process: the edge, the pipeline and its stages, the relay, over
scripted upstreams (tests/support/scripted.py), driven through httpx's ASGI transport. No server,
no subprocess: tests of the edge and the stages run in milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.services import build_services
from gateway.settings import Settings
from tests.support.scripted import ScriptedTransport

__all__ = ["in_process_gateway"]


@asynccontextmanager
async def in_process_gateway(
    upstreams: Sequence[ScriptedTransport], tmp_path: Path, config: Mapping[str, Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway whose backends are the scripted upstreams (each serves model "m").
    Without `config`, development mode with the semantic cache and the router off (they need the
    embedding model)."""
    values: dict[str, Any] = {
        "auth": {"mode": "none"},
        "cache": {"semantic": False},
        "router": {"enabled": False},
        **(config or {}),
    }
    values["server"] = {"state_dir": str(tmp_path / "state"), **values.get("server", {})}
    values["backends"] = [
        # APIs declared, so no discovery probe takes a scripted answer meant for a request.
        {"name": u.name, "base_url": "http://scripted.invalid/v1", "models": list(u.models),
         "apis": ["chat", "completions", "embeddings"]}
        for u in upstreams
    ]
    settings = Settings.model_validate(values)
    edge = create_app(settings)
    services = await build_services(settings, transports={u.name: u for u in upstreams})
    edge.services = services
    edge.app.state.services = services  # type: ignore[attr-defined]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://gateway") as client:
            yield client
    finally:
        await services.aclose()
