"""One request, timed like `switchyard bench` times it, keeping what a shedding test needs too.

`Runner.execute` fills a `RequestRecord` but drops the response headers it does not report; a bench
that checks load shedding also needs `Retry-After`. `send` does the same work and returns both.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any

import orjson

from bench.loadgen.http import HttpError, Pool, render_request
from bench.loadgen.record import RequestRecord, SseObserver, parse_json_response
from bench.loadgen.runner import PRIORITY_HEADER
from bench.loadgen.summary import error_kind
from bench.loadgen.target import Target

__all__ = ["Reply", "send"]


@dataclass(slots=True)
class Reply:
    record: RequestRecord
    retry_after: float | None = None  # seconds from a `Retry-After` header, when the answer had one


async def send(
    pool: Pool,
    target: Target,
    body: dict[str, Any],
    *,
    priority: str | None = None,
    timeout_s: float = 60.0,
    index: int = 0,
    tag: str = "",
) -> Reply:
    """POST `body` to chat completions; target failures become `record.error`, never exceptions."""
    headers = {"content-type": "application/json"}
    if priority is not None:
        headers[PRIORITY_HEADER] = priority
    data = render_request("POST", target.path("/chat/completions"), target.authority, headers, orjson.dumps(body))
    rec = RequestRecord(index=index, tag=tag, priority=priority, stream=body.get("stream") is True)
    observer = SseObserver(rec) if rec.stream else None
    rec.start = perf_counter()
    try:
        resp = await pool.request(data, observer, timeout_s)
    except HttpError as exc:
        rec.end = perf_counter()
        rec.error = exc.kind
        return Reply(rec)
    rec.end = perf_counter()
    rec.status = resp.status
    rec.take_headers(resp.headers)
    reply = Reply(rec, _seconds(resp.headers.get(b"retry-after")))
    if resp.status >= 400:
        rec.error = error_kind(resp.status)
        rec.chunk_times.clear()
        rec.ttft = None
    elif observer is None:
        parse_json_response(rec, resp.body)
    elif not observer.done and rec.error is None:
        rec.error = "incomplete_stream"
    if rec.output_tokens is None and rec.stream and rec.error is None:
        rec.output_tokens = len(rec.chunk_times)
    return reply


def _seconds(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: not something these gateways send
