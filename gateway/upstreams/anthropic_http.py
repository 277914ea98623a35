"""Servers that speak only Anthropic's Messages API (Anthropic itself, or `switchyard sim --apis
messages`), reached over the same pooled HTTP as OpenAI-compatible servers.

Messages calls go through as they are, with the key as `x-api-key` and an `anthropic-version`
(the client's own on native pass-through, else `DEFAULT_VERSION`). Chat completions calls are
translated to Messages and the answer back (gateway/anthropic/to_messages.py), plain or streamed,
so chat clients (and, through chat, Responses clients) reach these servers too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from gateway.anthropic.dialect import MESSAGES
from gateway.anthropic.to_messages import ChatChunks, chat_response, messages_request
from gateway.errors import BadRequest, UpstreamError
from gateway.upstreams.base import UpstreamCall, UpstreamResponse
from gateway.upstreams.openai_http import OpenAIHTTPTransport

__all__ = ["DEFAULT_VERSION", "AnthropicHTTPTransport"]

DEFAULT_VERSION = "2023-06-01"


class _ChatFromMessages:
    """A Messages answer read, or streamed, as chat completions."""

    __slots__ = ("_backend", "_inner", "_model")

    def __init__(self, backend: str, inner: UpstreamResponse, model: str | None):
        self._backend = backend
        self._inner = inner
        self._model = model

    async def read(self) -> bytes:
        raw = await self._inner.read()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # the attempt reports a malformed body
        return orjson.dumps(chat_response(message)) if isinstance(message, dict) else raw

    async def events(self) -> AsyncIterator[bytes]:
        chunks = ChatChunks(self._model)
        async for raw in self._inner.events():
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield raw  # the attempt reports a malformed event
                continue
            if not isinstance(event, dict):
                yield raw
                continue
            for chunk in chunks.feed(event):
                yield orjson.dumps(chunk)
        if not chunks.done:
            raise UpstreamError(f"backend '{self._backend}' closed the stream before message_stop")

    async def aclose(self) -> None:
        await self._inner.aclose()


class AnthropicHTTPTransport:
    def __init__(self, http: OpenAIHTTPTransport):
        self.http = http
        self.name = http.name

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        headers = {"anthropic-version": DEFAULT_VERSION, **call.headers}
        if call.endpoint.startswith("messages"):
            return await self.http.send(_with(call, headers=headers))
        if call.endpoint != "chat/completions":
            raise BadRequest(f"Backend '{self.name}' speaks only the Messages API.", param="model")
        body = messages_request(call.body)
        messages = UpstreamCall(
            "messages", body, call.stream, call.request_id, call.priority, headers, dialect=MESSAGES
        )
        return _ChatFromMessages(self.name, await self.http.send(messages), call.body.get("model"))

    async def list_models(self) -> list[str]:
        return await self.http.list_models(headers={"anthropic-version": DEFAULT_VERSION})

    async def aclose(self) -> None:
        await self.http.aclose()


def _with(call: UpstreamCall, *, headers: dict[str, str]) -> UpstreamCall:
    return UpstreamCall(
        call.endpoint, call.body, call.stream, call.request_id, call.priority, headers, dialect=call.dialect
    )
