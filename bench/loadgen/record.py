"""What one request measured, and the incremental SSE parser that fills it in as bytes arrive.

Times are `perf_counter` seconds. A *content chunk* is an SSE event that carries output: text
(chat `delta.content`, completions `text`) or a tool-call delta. Time to first token is the arrival
of the first content chunk, not of the headers or of the role-only opening chunk.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["RequestRecord", "SseObserver", "is_cache_hit", "parse_json_response"]


def is_cache_hit(status: str | None) -> bool:
    """Whether an `x-switchyard-cache` value means the cache answered (`exact`, `semantic`, `hit…`)."""
    if status is None:
        return False
    s = status.lower()
    return s in ("exact", "semantic") or s.startswith("hit")


@dataclass(slots=True)
class RequestRecord:
    index: int
    tag: str = ""  # workload-specific label: phase (cold/warm), turn, tool count…
    priority: str | None = None
    scheduled: float = 0.0  # when the load shape wanted it sent
    start: float = 0.0  # when it was written to the socket
    end: float = 0.0
    status: int = 0
    error: str | None = None  # None, or a kind: http_429, http_5xx, http_4xx, timeout, connect, …
    stream: bool = True
    ttft: float | None = None  # seconds from start to the first content chunk
    chunk_times: list[float] = field(default_factory=list)  # arrival of each content chunk, from start
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    output_chars: int = 0
    finish_reason: str | None = None
    cache: str | None = None  # x-switchyard-cache: exact, semantic, miss or bypass
    tools_in: int | None = None  # from x-switchyard-tools "<in>-><out>"
    tools_out: int | None = None
    tool_called: str | None = None
    expected_tool: str | None = None
    text: list[str] | None = None  # collected only when the workload needs the reply (multi-turn)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def itls(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (e2e − ttft) / (tokens − 1)."""
        n = self.output_tokens or len(self.chunk_times)
        if self.ttft is None or n < 2:
            return None
        return (self.chunk_times[-1] - self.ttft) / (n - 1)

    def take_headers(self, headers: dict[bytes, bytes]) -> None:
        cache = headers.get(b"x-switchyard-cache")
        if cache is not None:
            self.cache = cache.decode("latin-1")
        tools = headers.get(b"x-switchyard-tools")
        if tools is not None:
            a, _, b = tools.decode("latin-1").partition("->")
            if a.strip().isdigit() and b.strip().isdigit():
                self.tools_in, self.tools_out = int(a), int(b)


def _take_choice(rec: RequestRecord, choice: dict[str, Any]) -> bool:
    """Record one choice; True when it carries output."""
    if choice.get("finish_reason"):
        rec.finish_reason = choice["finish_reason"]
    delta = choice.get("delta")
    text = choice.get("text") if delta is None else delta.get("content")  # no delta: completions
    if text:
        rec.output_chars += len(text)
        if rec.text is not None:
            rec.text.append(text)
        return True
    if delta is None:
        return False
    calls = delta.get("tool_calls")
    if calls:
        fn = calls[0].get("function") or {}
        if fn.get("name"):
            rec.tool_called = fn["name"]
        return True
    return False


class SseObserver:
    """Feeds on body pieces (with their arrival time) and updates a `RequestRecord`."""

    __slots__ = ("_buf", "done", "rec")

    def __init__(self, rec: RequestRecord):
        self.rec = rec
        self._buf = b""
        self.done = False  # saw data: [DONE]

    def __call__(self, data: bytes, now: float) -> None:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop()
        rec = self.rec
        for raw in events:
            # Fast path: one `data: ` line, which is what OpenAI-compatible servers send.
            if raw.startswith(b"data: ") and b"\n" not in raw:
                payload = raw[6:]
            else:
                payload = _payload(raw)
                if not payload:
                    continue
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                rec.error = rec.error or "malformed_sse"
                continue
            if not isinstance(obj, dict):
                rec.error = rec.error or "malformed_sse"
                continue
            choices = obj.get("choices")
            if choices:
                if _take_choice(rec, choices[0]):
                    offset = now - rec.start
                    if rec.ttft is None:
                        rec.ttft = offset
                    rec.chunk_times.append(offset)
            elif "error" in obj:
                rec.error = rec.error or "stream_error"
            usage = obj.get("usage")
            if usage:
                rec.prompt_tokens = usage.get("prompt_tokens")
                rec.output_tokens = usage.get("completion_tokens")


def _payload(raw: bytes) -> bytes:
    """The data of a general SSE event: its `data:` lines joined by newlines (other fields ignored)."""
    payload = b""
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            piece = line[5:]
            piece = piece[1:] if piece.startswith(b" ") else piece
            payload = piece if not payload else payload + b"\n" + piece
    return payload


def parse_json_response(rec: RequestRecord, body: bytes | bytearray) -> None:
    """Fill a record from a whole (non-streamed) response body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        rec.error = "malformed_json"
        return
    if not isinstance(obj, dict):
        rec.error = "malformed_json"
        return
    usage = obj.get("usage") or {}
    rec.prompt_tokens = usage.get("prompt_tokens")
    rec.output_tokens = usage.get("completion_tokens")
    choices = obj.get("choices") or []
    if choices:
        choice = choices[0]
        rec.finish_reason = choice.get("finish_reason")
        message = choice.get("message") or {}
        text = message.get("content") if message else choice.get("text")
        if text:
            rec.output_chars += len(text)
            if rec.text is not None:
                rec.text.append(text)
        calls = message.get("tool_calls") if message else None
        if calls:
            rec.tool_called = (calls[0].get("function") or {}).get("name")
