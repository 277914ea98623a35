"""The load generator's requests, on the gateway's own HTTP/1.1 client (`gateway/upstreams/http1.py`).

Why that client and not httpx: at thousands of streamed requests per second httpx costs more than the
server being measured. Each body piece goes to the caller's callback with the time its socket read
arrived, so timestamps are taken before any Python-level parsing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.upstreams.http1 import HttpError, HttpTimeout, Pool, encode_headers, render_request

__all__ = ["BodyCallback", "HttpError", "Pool", "Reply", "fetch", "request_bytes"]

BodyCallback = Callable[[bytes, float], None]


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[bytes, bytes]  # names in lower case
    body: bytes  # empty when the pieces went to a callback
    t_headers: float  # perf_counter when the headers arrived


def request_bytes(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """A whole request, rendered once before its clock starts."""
    return render_request(method, path, encode_headers({"host": host, **headers}), body)


async def fetch(pool: Pool, payload: bytes, on_body: BodyCallback | None = None, timeout: float | None = None) -> Reply:
    """The whole response to `payload` within `timeout` seconds; raises `HttpError` (`.kind` says why)."""
    try:
        async with asyncio.timeout(timeout):
            exchange = await pool.request(payload)
            try:
                body = b""
                if on_body is None:
                    body = await exchange.read()
                else:
                    async for piece, arrived in exchange.timed():
                        on_body(piece, arrived)
            finally:
                await exchange.aclose()
    except TimeoutError:
        raise HttpTimeout("no complete response within the timeout", connecting=False) from None
    headers = {k.lower(): v for k, v in exchange.headers}
    return Reply(exchange.status, headers, body, exchange.t_headers)
