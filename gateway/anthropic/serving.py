"""POST /v1/messages and POST /v1/messages/count_tokens.

Messages requests run the whole pipeline in the Messages dialect: backends that speak Messages get
the body untouched (with the client's `anthropic-version` and `anthropic-beta`), others the chat
translation. Counting tokens is no generation: it goes to a backend of the model that counts
natively, else to the local engine's tokenizer, else it is the gateway's estimate; the
`x-switchyard-token-count` header says which.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.anthropic.dialect import FORWARDED_HEADERS, MESSAGES, MessagesDialect
from gateway.anthropic.protocol import CountTokensRequest, MessagesRequest
from gateway.anthropic.to_chat import chat_request
from gateway.context import RequestContext
from gateway.errors import BadRequest, PermissionDenied, SwitchyardError, UpstreamError
from gateway.openai.base import parse_body
from gateway.openai.serving import Serving
from gateway.responses import ASGIResponse
from gateway.stages.admission import estimate_tokens
from gateway.types import JSON, Endpoint
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.local_engine import LocalEngineTransport
from gateway.upstreams.translated import TranslatingTransport

__all__ = ["COUNT_TOKENS", "TOKEN_COUNT_HEADER", "CountTokensServing", "MessagesServing"]

TOKEN_COUNT_HEADER = "x-switchyard-token-count"  # native | tokenizer | estimate


def _forwarded(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}


class MessagesServing(Serving):
    request_model = MessagesRequest
    dialect = MESSAGES

    def describe(self, ctx: RequestContext, parsed: Any) -> None:
        ctx.stream = bool(parsed.stream)
        ctx.include_usage = True  # Messages streams always carry usage
        ctx.upstream_headers.update(_forwarded(ctx.headers))


class _CountTokensDialect(MessagesDialect):
    """Its errors and native path are the Messages API's; it has no chat translation."""

    endpoint: Endpoint = "messages/count_tokens"
    translation = None


COUNT_TOKENS = _CountTokensDialect()


class _JSON(ASGIResponse):
    def __init__(self, body: JSON, headers: dict[str, str]):
        super().__init__()
        self.body_bytes = orjson.dumps(body)
        self.extra = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), *self.extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body_bytes})


class CountTokensServing(Serving):
    request_model = CountTokensRequest
    dialect = COUNT_TOKENS

    async def handle(self, raw: bytes, request_id: str, headers: Any) -> Any:
        body, parsed = parse_body(raw, self.request_model)
        ctx = RequestContext(
            request_id=request_id, endpoint=self.dialect.endpoint, body=body, headers=headers, dialect=self.dialect
        )
        ctx.model = parsed.model  # type: ignore[attr-defined]
        await self.pipeline.stages[0](ctx)  # authenticate: the pipeline's first stage
        relay = self.pipeline.relay
        relay.registry.check_model(ctx.model)
        if ctx.tenant.models is not None and ctx.model not in ctx.tenant.models:
            raise PermissionDenied(f"This key may not use the model '{ctx.model}'.", param="model")
        candidates = relay.registry.candidates(ctx.model)
        for backend in candidates:
            transport = backend.transport
            if isinstance(transport, TranslatingTransport) and "messages" in transport.native and backend.usable():
                counted = await self._native(
                    backend.transport, {**body, "model": backend.settings.upstream_model(ctx.model)}, ctx
                )
                if counted is not None:
                    return _JSON(counted, {TOKEN_COUNT_HEADER: "native"})
        for backend in candidates:
            inner = getattr(backend.transport, "inner", backend.transport)
            if isinstance(inner, LocalEngineTransport) and inner.pool.ready:
                return _JSON({"input_tokens": _tokenized(inner, body)}, {TOKEN_COUNT_HEADER: "tokenizer"})
        return _JSON({"input_tokens": _estimated(body)}, {TOKEN_COUNT_HEADER: "estimate"})

    async def _native(self, transport: Any, body: JSON, ctx: RequestContext) -> JSON | None:
        call = UpstreamCall(
            "messages/count_tokens",
            body,
            False,
            ctx.request_id,
            ctx.priority,
            _forwarded(ctx.headers),
            dialect=COUNT_TOKENS,
        )
        try:
            response = await transport.send(call)
        except UpstreamError as exc:
            if exc.retryable:
                return None  # the backend is busy or down: count some other way
            raise
        try:
            answer = orjson.loads(await response.read())
        except orjson.JSONDecodeError:
            return None
        finally:
            await response.aclose()
        return answer if isinstance(answer, dict) and isinstance(answer.get("input_tokens"), int) else None


def _as_chat(body: JSON) -> JSON:
    try:
        return chat_request({**body, "max_tokens": 1})
    except SwitchyardError as exc:
        raise BadRequest(f"Tokens cannot be counted here: {exc.message}", param=exc.param) from None


def _tokenized(engine: LocalEngineTransport, body: JSON) -> int:
    chat = _as_chat(body)
    messages = [{**m, "content": _text(m.get("content"))} for m in chat["messages"]]
    return len(engine.pool.render_chat(messages, tools=chat.get("tools")))


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _estimated(body: JSON) -> int:
    """The gateway's own estimate: four characters a token (admission's, without output)."""
    return estimate_tokens({**_as_chat(body), "max_tokens": 0}, 0, upper_bound=False)
