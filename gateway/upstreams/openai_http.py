"""Remote OpenAI-compatible servers (vLLM, TGI, Ollama, OpenAI, `switchyard sim`) over pooled httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import orjson

from gateway.errors import UpstreamError, UpstreamStatus, UpstreamTimeout
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.http1 import Exchange, HTTP1Pool, PooledHTTP1Transport
from gateway.upstreams.sse import SSEDecoder

__all__ = ["OpenAIHTTPTransport", "map_httpx_errors"]

_MAX_ERROR_BODY = 64 * 1024


@contextmanager
def map_httpx_errors(backend: str) -> Iterator[None]:
    """Translate httpx's exceptions into the gateway's tree, naming the backend but nothing secret."""
    try:
        yield
    except httpx.TimeoutException as exc:
        phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting for"
        raise UpstreamTimeout(f"timed out {phase} backend '{backend}'") from None
    except httpx.ConnectError:
        raise UpstreamError(f"could not connect to backend '{backend}'") from None
    except httpx.RemoteProtocolError:
        raise UpstreamError(f"backend '{backend}' closed the connection before the response ended") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"backend '{backend}' failed: {type(exc).__name__}") from None


def _redact(data: bytes, secret: bytes | None) -> bytes:
    """An upstream may quote the gateway's own key back (in an error event, say): never pass it on."""
    return data.replace(secret, b"***") if secret and secret in data else data


async def _sse_events(backend: str, pieces: AsyncIterator[bytes], secret: bytes | None) -> AsyncIterator[bytes]:
    decoder = SSEDecoder()
    with map_httpx_errors(backend):
        async for raw in pieces:
            for data in decoder.feed(raw):
                if data == b"[DONE]":
                    return
                yield _redact(data, secret)
    for data in decoder.flush():
        if data != b"[DONE]":
            yield _redact(data, secret)
    # The stream ended without [DONE]: the upstream dropped it part-way.
    raise UpstreamError(f"backend '{backend}' closed the stream before it finished")


class _PoolResponse:
    """A response read straight off the HTTP/1.1 pool (plain-HTTP upstreams: the hot path)."""

    __slots__ = ("_backend", "_exchange", "_secret")

    def __init__(self, backend: str, exchange: Exchange, secret: bytes | None):
        self._backend = backend
        self._exchange = exchange
        self._secret = secret

    async def read(self) -> bytes:
        with map_httpx_errors(self._backend):
            return _redact(await self._exchange.read(), self._secret)

    def events(self) -> AsyncIterator[bytes]:
        return _sse_events(self._backend, self._exchange.__aiter__(), self._secret)

    async def aclose(self) -> None:
        await self._exchange.aclose()


class _HTTPXResponse:
    """A response through httpx's own transport (TLS upstreams)."""

    __slots__ = ("_backend", "_response", "_secret")

    def __init__(self, backend: str, response: httpx.Response, secret: bytes | None):
        self._backend = backend
        self._response = response
        self._secret = secret

    async def read(self) -> bytes:
        with map_httpx_errors(self._backend):
            return _redact(await self._response.aread(), self._secret)

    def events(self) -> AsyncIterator[bytes]:
        return _sse_events(self._backend, self._response.aiter_raw(), self._secret)

    async def aclose(self) -> None:
        await self._response.aclose()


class OpenAIHTTPTransport:
    """One pooled, keep-alive `httpx.AsyncClient` per backend. For plain-HTTP upstreams the client
    runs on our HTTP/1.1 pool, and relayed calls use that pool directly, skipping the client's
    per-request URL, cookie and redirect handling."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        max_connections: int = 256,
        connect_timeout: float = 2.0,
        read_timeout: float = 120.0,
    ):
        self.name = name
        self._api_key = api_key
        self._secret = api_key.encode() if api_key else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        url = httpx.URL(base_url)
        self._pool: HTTP1Pool | None = None
        transport: httpx.AsyncBaseTransport
        if url.scheme == "http":
            self._pool = HTTP1Pool(url.host, url.port or 80, max_connections)
            transport = PooledHTTP1Transport(self._pool)
        else:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            transport = httpx.AsyncHTTPTransport(limits=limits)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
            transport=transport,
            trust_env=False,
        )
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        self._path_prefix = url.raw_path.rstrip(b"/") + b"/"
        self._head = b"".join([f"host: {host}\r\n".encode(), *(f"{k}: {v}\r\n".encode() for k, v in headers.items())])

    async def send(self, call: UpstreamCall) -> _PoolResponse | _HTTPXResponse:
        body = orjson.dumps(call.body)
        with map_httpx_errors(self.name):
            if self._pool is not None:
                payload = b"".join(
                    (
                        b"POST ",
                        self._path_prefix,
                        call.endpoint.encode(),
                        b" HTTP/1.1\r\n",
                        self._head,
                        b"x-request-id: ",
                        call.request_id.encode(),
                        b"\r\ncontent-length: ",
                        str(len(body)).encode(),
                        b"\r\n\r\n",
                        body,
                    )
                )
                exchange = await self._pool.request(
                    payload, connect_timeout=self._connect_timeout, read_timeout=self._read_timeout
                )
                if exchange.status >= 400:
                    try:
                        error_body = await exchange.read()
                    finally:
                        await exchange.aclose()
                    raise self._status_error(
                        exchange.status, error_body[:_MAX_ERROR_BODY], exchange.header(b"retry-after")
                    )
                return _PoolResponse(self.name, exchange, self._secret)
            request = self._client.build_request(
                "POST", call.endpoint, content=body, headers={"x-request-id": call.request_id}
            )
            response = await self._client.send(request, stream=True)
            if response.status_code >= 400:
                try:
                    error_body = await response.aread()
                finally:
                    await response.aclose()
                raise self._status_error(
                    response.status_code, error_body[:_MAX_ERROR_BODY], response.headers.get("retry-after")
                )
        return _HTTPXResponse(self.name, response, self._secret)

    async def list_models(self) -> list[str]:
        with map_httpx_errors(self.name):
            response = await self._client.get("models")
        if response.status_code != 200:
            raise self._status_error(
                response.status_code, response.content[:_MAX_ERROR_BODY], response.headers.get("retry-after")
            )
        try:
            return [str(m["id"]) for m in orjson.loads(response.content)["data"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamError(f"backend '{self.name}' answered /models with an unexpected body") from None

    async def aclose(self) -> None:
        await self._client.aclose()

    def _status_error(self, status: int, body: bytes, retry_after_header: str | bytes | None) -> UpstreamStatus:
        if isinstance(retry_after_header, bytes):
            retry_after_header = retry_after_header.decode("latin-1")
        retry_after = _retry_after(retry_after_header)
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
