"""The one interface every backend speaks: send a call, get a status and then a body or SSE events.

Implementations: `openai_http.py` (remote OpenAI-compatible servers) and `local_engine.py` (the
built-in engine). The relay (`gateway/relay.py`) holds all policy and sees only this Protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.types import JSON, Endpoint

if TYPE_CHECKING:
    from gateway.dialect import Dialect

__all__ = ["UpstreamCall", "UpstreamResponse", "UpstreamTransport"]


@dataclass(slots=True)
class UpstreamCall:
    endpoint: Endpoint
    body: JSON  # already rewritten for this backend (its model name, tools, stream options)
    stream: bool
    request_id: str
    priority: str = "interactive"
    # Headers for the upstream beyond the transport's own (content type, credentials): the request
    # id is sent as x-request-id; these are e.g. trace context or an API's version headers.
    headers: dict[str, str] = field(default_factory=dict)
    # The API the call is in (what `endpoint` names): how its stream ends, and how to translate
    # it for a backend that does not speak it (gateway/upstreams/translated.py).
    dialect: Dialect = field(kw_only=True)


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
