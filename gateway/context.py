"""The typed state one request carries through the pipeline's stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.types import JSON, Endpoint, Priority

if TYPE_CHECKING:
    import numpy as np

    from gateway.completion import Completion

__all__ = ["RequestContext", "Tenant"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    priority: Priority = "interactive"
    rpm: int | None = None
    tpm: int | None = None
    models: frozenset[str] | None = None  # None: every model


OnComplete = Callable[["Completion"], Awaitable[None] | None]


@dataclass(slots=True)
class RequestContext:
    """Everything the stages learn about one request. The client's body is never mutated:
    stages that change what goes upstream write `upstream_body`."""

    request_id: str
    endpoint: Endpoint
    body: JSON
    headers: Any  # starlette Headers: case-insensitive mapping of the client's headers
    arrived: float = field(default_factory=time.perf_counter)
    tenant: Tenant = Tenant("anonymous")
    priority: Priority = "interactive"
    model: str = ""
    stream: bool = False
    include_usage: bool = False
    upstream_body: JSON | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    reserved_tokens: int = 0
    capture: bool = False  # a stage needs the whole response (cache store, router feedback)
    # Run before the response's last byte, so a client's next request sees their effect (token
    # accounting); keep them quick. `on_complete` runs afterwards, in the background.
    settlers: list[OnComplete] = field(default_factory=list)
    on_complete: list[OnComplete] = field(default_factory=list)
    # One embedding per distinct text per request, shared by the cache and the tool router;
    # None when no embedder runs. Returns None (a miss) when embedding is slow or fails.
    embed: Callable[[str], Awaitable[np.ndarray | None]] | None = None

    async def settle(self, completion: Completion) -> None:
        """Run the settlers once (later calls do nothing)."""
        hooks, self.settlers = self.settlers, []
        await self.run_hooks(hooks, completion)

    async def run_hooks(self, hooks: list[OnComplete], completion: Completion) -> None:
        """Call each hook; one that fails is logged and does not stop the others."""
        for hook in hooks:
            try:
                result = hook(completion)
                if result is not None:
                    await result
            except Exception:
                log.exception("a completion hook failed (request %s)", self.request_id)

    def outgoing_body(self) -> JSON:
        """The body to send upstream, copied on first change so the client's body stays as sent."""
        if self.upstream_body is None:
            self.upstream_body = dict(self.body)
        return self.upstream_body
