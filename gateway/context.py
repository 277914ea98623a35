"""The typed state one request carries through the pipeline's stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.dialect import CHAT, Dialect
from gateway.intent import intent_text
from gateway.telemetry.spans import CURRENT_TRACE, RequestTrace
from gateway.types import JSON, Endpoint, Priority

if TYPE_CHECKING:
    import numpy as np

    from gateway.completion import Completion

__all__ = ["Budget", "RequestContext", "Tenant"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Budget:
    """One spend cap that applies to a request: its key's, its team's or its tenant's."""

    level: str  # "key", "team" or "tenant"
    scope: str  # the counter's name, e.g. "team:acme:search"
    amount_usd: float
    period: str  # "daily" or "monthly"


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a request runs for: the tenant, and what the key it presented may do."""

    name: str
    priority: Priority = "interactive"
    rpm: int | None = None
    tpm: int | None = None
    models: frozenset[str] | None = None  # None: every model
    team: str | None = None
    key_id: str | None = None  # the key's public id (admin API), or "cfg-…" for a key in the file
    budgets: tuple[Budget, ...] = ()
    expires_at: float | None = None  # unix time
    limit_scope: str = ""  # whose rpm/tpm bucket: the tenant's, or the key's own for a managed key

    @property
    def bucket(self) -> str:
        return self.limit_scope or self.name


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
    dialect: Dialect = CHAT  # the API the client called (gateway/dialect.py)
    stream: bool = False
    include_usage: bool = False
    upstream_body: JSON | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # Client headers the upstream must see on native pass-through (e.g. an API version).
    upstream_headers: dict[str, str] = field(default_factory=dict)
    reserved_tokens: int = 0
    capture: bool = False  # a stage needs the whole response (cache store, router feedback)
    # Run before the response's last byte, so a client's next request sees their effect (token
    # accounting); keep them quick. `on_complete` runs afterwards, in the background.
    settlers: list[OnComplete] = field(default_factory=list)
    on_complete: list[OnComplete] = field(default_factory=list)
    # One embedding per distinct text per request, shared by the cache and the tool router;
    # None when no embedder runs. Returns None (a miss) when embedding is slow or fails.
    embed: Callable[[str], Awaitable[np.ndarray | None]] | None = None
    # The request's trace (spans, request-log line); None when telemetry is off: then nothing is recorded.
    trace: RequestTrace | None = field(default_factory=CURRENT_TRACE.get)
    _intent: str | None = field(default=None, repr=False)
    _canonical: JSON | None = field(default=None, repr=False)
    _canonical_done: bool = field(default=False, repr=False)

    @property
    def canonical(self) -> JSON | None:
        """The request (as it goes upstream, history included) in chat completions form, computed
        once for the stages that read requests; None when the API's request has no such form."""
        if not self._canonical_done:
            body = self.upstream_body if self.upstream_body is not None else self.body
            self._canonical = self.dialect.canonical(body)
            self._canonical_done = True
        return self._canonical

    @property
    def intent(self) -> str:
        """The request's intent text (`gateway.intent`), computed once and shared by the cache and
        the tool router, so the memoised `embed` sees one text."""
        if self._intent is None:
            self._intent = intent_text((self.canonical or {}).get("messages"))
        return self._intent

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
