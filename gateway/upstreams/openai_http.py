"""Remote OpenAI-compatible servers (vLLM, TGI, Ollama, OpenAI, `switchyard sim`) over the pooled
HTTP/1.1 client (`gateway/upstreams/http1.py`), plain HTTP and TLS alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import orjson

from gateway.dialect import Dialect
from gateway.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.http1 import Disconnected, Exchange, HttpError, HttpTimeout, Pool, encode_headers, render_request
from gateway.upstreams.sse import SSEDecoder

__all__ = ["OpenAIHTTPTransport", "map_http_errors"]

_MAX_ERROR_BODY = 64 * 1024


@contextmanager
def map_http_errors(backend: str) -> Iterator[None]:
    """Translate the client's exceptions into the gateway's tree, naming the backend but nothing secret."""
    try:
        yield
    except HttpTimeout as exc:
        phase = "connecting to" if exc.connecting else "waiting for"
        raise UpstreamTimeout(f"timed out {phase} backend '{backend}'") from None
    except Disconnected:
        raise UpstreamError(f"backend '{backend}' closed the connection before the response ended") from None
    except HttpError as exc:
        raise UpstreamError(f"backend '{backend}' failed: {exc}") from None


def _redact(data: bytes, secret: bytes | None) -> bytes:
    """An upstream may quote the gateway's own key back (in an error event, say): never pass it on."""
    return data.replace(secret, b"***") if secret and secret in data else data


class _Response:
    """An accepted call: the body read whole, or its SSE events as they arrive."""

    __slots__ = ("_backend", "_dialect", "_exchange", "_secret")

    def __init__(self, backend: str, exchange: Exchange, secret: bytes | None, dialect: Dialect):
        self._backend = backend
        self._exchange = exchange
        self._secret = secret
        self._dialect = dialect

    async def read(self) -> bytes:
        with map_http_errors(self._backend):
            return _redact(await self._exchange.read(), self._secret)

    async def events(self) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        last = b""
        with map_http_errors(self._backend):
            async for raw in self._exchange:
                for data in decoder.feed(raw):
                    if data == b"[DONE]":
                        return
                    last = data
                    yield _redact(data, self._secret)
        for data in decoder.flush():
            if data != b"[DONE]":
                last = data
                yield _redact(data, self._secret)
        if self._dialect.stream_finished(last):
            return  # APIs such as Responses end at a closing event
        # The stream ended without [DONE] (or its API's closing event): the upstream dropped it part-way.
        raise UpstreamError(f"backend '{self._backend}' closed the stream before it finished")

    async def aclose(self) -> None:
        await self._exchange.aclose()


class OpenAIHTTPTransport:
    """One keep-alive connection pool per backend. Each call's request is rendered in one piece: the
    headers every call carries are encoded once, the call's own (`x-request-id`, `UpstreamCall.headers`)
    are added to them."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        api_key_header: str = "authorization",
        max_connections: int = 256,
        connect_timeout: float = 2.0,
        read_timeout: float = 120.0,
        keepalive_expiry: float = 4.0,
    ):
        self.name = name
        self._api_key = api_key
        self._secret = api_key.encode() if api_key else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool = Pool.for_url(base_url, max_connections=max_connections, keepalive_expiry=keepalive_expiry)
        headers = {"host": self._pool.authority, "content-type": "application/json", "accept-encoding": "identity"}
        if api_key:  # as a bearer token (OpenAI's way), or in a header of its own (Anthropic's x-api-key)
            headers[api_key_header] = f"Bearer {api_key}" if api_key_header == "authorization" else api_key
        self._head = encode_headers(headers)
        self._path_prefix = urlsplit(base_url).path.rstrip("/") + "/"

    async def _request(self, method: str, endpoint: str, head: bytes, body: bytes = b"") -> Exchange:
        """Send one request; an answer of 400 or more is read and raised as `UpstreamStatus`."""
        payload = render_request(method, self._path_prefix + endpoint, head, body)
        with map_http_errors(self.name):
            exchange = await self._pool.request(
                payload, connect_timeout=self._connect_timeout, read_timeout=self._read_timeout
            )
            if exchange.status >= 400:
                try:
                    error_body = await exchange.read()
                finally:
                    await exchange.aclose()
                raise self._status_error(exchange.status, error_body[:_MAX_ERROR_BODY], exchange.header(b"retry-after"))
        return exchange

    async def send(self, call: UpstreamCall) -> _Response:
        extra = {"x-request-id": call.request_id, **call.headers}
        try:
            head = self._head + encode_headers(extra)
        except ValueError as exc:
            raise UpstreamError(f"backend '{self.name}': {exc}") from None
        exchange = await self._request("POST", call.endpoint, head, orjson.dumps(call.body))
        return _Response(self.name, exchange, self._secret, call.dialect)

    async def list_models(self, headers: dict[str, str] | None = None) -> list[str]:
        exchange = await self._request("GET", "models", self._head + encode_headers(headers or {}))
        with map_http_errors(self.name):
            body = await exchange.read()
        try:
            return [str(m["id"]) for m in orjson.loads(body)["data"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamError(f"backend '{self.name}' answered /models with an unexpected body") from None

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _status_error(self, status: int, body: bytes, retry_after_header: bytes | None) -> UpstreamStatus:
        retry_after = _retry_after(retry_after_header.decode("latin-1") if retry_after_header else None)
        if status in (401, 403, 407):
            # Never relay what the upstream said about *our* credentials.
            return UpstreamStatus(status, f"backend '{self.name}' rejected the gateway's credentials")
        message = _error_message(body) or f"backend '{self.name}' answered HTTP {status}"
        if self._api_key:
            message = message.replace(self._api_key, "***")
        return UpstreamStatus(status, message, retry_after=retry_after)


def _error_message(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:2000]
        if isinstance(err, str):
            return err[:2000]
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])[:2000]
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
