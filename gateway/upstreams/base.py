"""The one interface every backend speaks: send a call, get a status and then a body or SSE events.

Implementations: `openai_http.py` (remote OpenAI-compatible servers) and `local_engine.py` (the
built-in engine). The relay (`gateway/relay.py`) holds all policy and sees only this Protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.types import JSON, Endpoint

__all__ = ["UpstreamCall", "UpstreamResponse", "UpstreamTransport"]


@dataclass(slots=True)
class UpstreamCall:
    endpoint: Endpoint
    body: JSON  # already rewritten for this backend (its model name, tools, stream options)
    stream: bool
    request_id: str
    priority: str = "interactive"


class UpstreamResponse(Protocol):
    """An accepted upstream call. `read` for plain calls, `events` for streams; always `aclose`."""

    async def read(self) -> bytes: ...

    def events(self) -> AsyncIterator[bytes]:
        """The `data:` payload of each SSE event as it arrives, `[DONE]` excluded."""
        ...

    async def aclose(self) -> None: ...


class UpstreamTransport(Protocol):
    name: str

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        """Returns once the upstream accepted the call; raises `UpstreamError` (mapped) when it did not."""
        ...

    async def list_models(self) -> list[str]:
        """The models the upstream serves (discovery and active health checks)."""
        ...

    async def aclose(self) -> None: ...
