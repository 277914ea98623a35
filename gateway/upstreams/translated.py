"""Every backend answers every API: calls on an API the backend speaks natively go through
untouched; others are translated to chat completions, and the answer back, by the call's
`Dialect.translation` (pure functions, gateway/dialect.py).

`TranslatingTransport` wraps each backend's own transport (gateway/services.py), so the relay,
the attempt and the writers only ever see the client's API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import orjson

from gateway.dialect import CHAT, StreamTranslation, Translation
from gateway.errors import BadRequest, UpstreamError, UpstreamStatus
from gateway.types import JSON, Api, Endpoint
from gateway.upstreams.base import UpstreamCall, UpstreamResponse, UpstreamTransport

__all__ = ["TranslatedResponse", "TranslatingTransport"]

log = logging.getLogger(__name__)


class TranslatedResponse:
    """A chat completions answer read, or streamed, as the client's API."""

    __slots__ = ("_inner", "_request", "_translation")

    def __init__(self, inner: UpstreamResponse, translation: Translation, request: JSON):
        self._inner = inner
        self._translation = translation
        self._request = request

    async def read(self) -> bytes:
        raw = await self._inner.read()
        try:
            chat = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # the attempt reports a malformed body
        if not isinstance(chat, dict):
            return raw
        return orjson.dumps(self._translation.response(chat, self._request))

    async def events(self) -> AsyncIterator[bytes]:
        stream: StreamTranslation = self._translation.stream(self._request)
        async for raw in self._inner.events():
            try:
                chunk = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield raw  # the attempt reports a malformed event
                continue
            if not isinstance(chunk, dict) or chunk.get("error"):
                yield raw  # an upstream error event: the attempt raises it
                continue
            for event in stream.feed(chunk):
                yield orjson.dumps(event)
        for event in stream.close():
            yield orjson.dumps(event)

    async def aclose(self) -> None:
        await self._inner.aclose()


class TranslatingTransport:
    """`native`: the APIs passed through. `discover`: APIs the backend may also speak, probed with
    an empty request alongside the health checks until it answers (a 404 or 405 means no)."""

    def __init__(
        self, inner: UpstreamTransport, native: frozenset[Api], discover: Mapping[Api, Endpoint] | None = None
    ):
        self.inner = inner
        self.name = inner.name
        self.native = native
        self._undecided = dict(discover or {})

    async def send(self, call: UpstreamCall) -> UpstreamResponse:
        dialect = call.dialect
        if dialect.api in self.native:
            return await self.inner.send(call)
        translation = dialect.translation
        if translation is None or "chat" not in self.native:
            raise BadRequest(f"Backend '{self.name}' does not serve the {dialect.api} API.", param="model")
        body = translation.request(call.body)
        chat = UpstreamCall(
            "chat/completions", body, call.stream, call.request_id, call.priority, call.headers, dialect=CHAT
        )
        return TranslatedResponse(await self.inner.send(chat), translation, call.body)

    async def list_models(self) -> list[str]:
        models = await self.inner.list_models()
        for api, endpoint in list(self._undecided.items()):
            await self._probe(api, endpoint)
        return models

    async def _probe(self, api: Api, endpoint: Endpoint) -> None:
        # An empty body is invalid for every API: a server that speaks it says so (400 or 422),
        # one that does not has no such path. Nothing is generated either way.
        call = UpstreamCall(endpoint, {}, False, "switchyard-discovery", "batch", dialect=CHAT)
        try:
            response = await self.inner.send(call)
        except UpstreamStatus as exc:
            if exc.upstream_status in (404, 405):
                del self._undecided[api]
            elif exc.upstream_status in (400, 422):
                del self._undecided[api]
                self.native = self.native | {api}
                log.info("backend %s speaks the %s API natively", self.name, api)
            return
        except UpstreamError:
            return  # unreachable now: ask again at the next health check
        await response.aclose()
        del self._undecided[api]  # answered an empty request: not an API we know how to use

    async def aclose(self) -> None:
        await self.inner.aclose()
