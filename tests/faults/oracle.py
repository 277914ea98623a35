"""What a client saw: one request run under a hard client-side deadline, classified.

The oracle of every fault case. A request is *answered* when it ends in one of three clear ways: a
complete answer (a JSON completion, or a stream that ends with `data: [DONE]`), an error status with
the OpenAI error shape, or a stream that ends with an OpenAI-style error event. Anything else is a
failure of the gateway: a stream that stops without either end (silently dropped), a connection
cut, or no answer before the deadline (hung).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

__all__ = ["Seen", "assert_answered", "assert_error_shape", "eventually", "observe", "recovery_time", "rss_mb"]

Kind = Literal["complete", "error_status", "error_event", "truncated", "transport_error", "hung"]
ANSWERED: frozenset[str] = frozenset({"complete", "error_status", "error_event"})
RETRY_STATUSES = (429, 503)


@dataclass
class Seen:
    kind: Kind
    status: int | None = None
    error: dict[str, Any] | None = None  # the OpenAI `error` object, for error statuses and events
    headers: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    chunks: int = 0  # data events that carried content (streams)
    text: str = ""  # the answer's text (plain or streamed)
    detail: str = ""  # what went wrong, for the failure kinds

    def summary(self) -> str:
        """One line for the fault table: how the request ended."""
        if self.kind == "complete":
            return f"{self.status} complete ({self.chunks} chunks)" if self.chunks else f"{self.status} complete"
        if self.kind == "error_status":
            assert self.error is not None
            retry = f", Retry-After {self.headers['retry-after']}" if "retry-after" in self.headers else ""
            return f"{self.status} {self.error.get('type')}{retry}"
        if self.kind == "error_event":
            assert self.error is not None
            return f"200 stream, {self.chunks} chunks, then error event ({self.error.get('type')})"
        return f"{self.kind}: {self.detail}"


def assert_error_shape(error: object) -> None:
    assert isinstance(error, dict), error
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert "Traceback" not in error["message"] and 'File "' not in error["message"], error


def assert_answered(seen: Seen, *, deadline: float | None = None) -> None:
    """The request got a complete answer or a clear error, in time."""
    assert seen.kind in ANSWERED, seen
    if deadline is not None:
        assert seen.elapsed < deadline, seen
    if seen.kind != "complete":
        assert_error_shape(seen.error)
    if seen.kind == "error_status" and seen.status in RETRY_STATUSES:
        assert int(seen.headers["retry-after"]) >= 1, seen


def _content_of(event: dict[str, Any]) -> str:
    out = []
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        out.append(delta.get("content") or choice.get("text") or "")
    return "".join(out)


def _text_of(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    return str(message.get("content") or choices[0].get("text") or "")


async def _read(response: httpx.Response, seen: Seen) -> None:
    seen.status = response.status_code
    seen.headers = {k.lower(): v for k, v in response.headers.items()}
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if seen.kind == "error_event":
                seen.kind, seen.detail = "truncated", "data after an error event"
                return
            if data == "[DONE]":
                seen.kind = "complete"
                return
            event = orjson.loads(data)
            if "error" in event:
                seen.kind, seen.error = "error_event", event["error"]
                continue
            piece = _content_of(event)
            if piece:
                seen.chunks += 1
                seen.text += piece
        if seen.kind != "error_event":
            seen.kind, seen.detail = "truncated", "the stream ended without [DONE] or an error event"
        return
    body = await response.aread()
    assert b"Traceback" not in body
    parsed = orjson.loads(body)
    if response.status_code >= 400:
        seen.kind, seen.error = "error_status", parsed.get("error")
    else:
        seen.kind, seen.text = "complete", _text_of(parsed)


async def observe(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    deadline: float,
    headers: dict[str, str] | None = None,
) -> Seen:
    """POST `body` to `url` and classify what came back within `deadline` seconds."""
    seen = Seen("truncated")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline):
            async with client.stream("POST", url, json=body, headers=headers) as response:
                await _read(response, seen)
    except TimeoutError:
        seen.kind, seen.detail = "hung", f"no end after {deadline:g}s"
    except httpx.HTTPError as exc:
        seen.kind, seen.detail = "transport_error", f"{type(exc).__name__}: {exc}"
    seen.elapsed = time.perf_counter() - started
    return seen


async def recovery_time(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *, budget: float, since: float | None = None
) -> float:
    """Seconds from `since` (default: now) until `body` is answered completely again; every
    attempt on the way must itself be answered (a clear error, never a hang)."""
    start = time.perf_counter() if since is None else since
    while time.perf_counter() - start < budget:
        seen = await observe(client, url, body, deadline=budget)
        assert_answered(seen)
        if seen.kind == "complete":
            return time.perf_counter() - start
        await asyncio.sleep(0.05)  # polling until the gateway serves again, bounded by the budget
    raise AssertionError(f"no complete answer within {budget:g}s")


async def eventually(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Return once `condition()` holds; fail after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.01)  # polling an observable state, bounded by the deadline


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
