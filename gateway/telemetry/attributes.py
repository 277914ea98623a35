"""What a finished request says about itself: its server span's attributes and its request-log line.

Attribute names follow the OpenTelemetry semantic conventions (HTTP, and GenAI: `gen_ai.*`);
what is the gateway's own is under `switchyard.`. Nothing here reads a key; content (prompts,
completions) is added only when a deployment turned it on, and then redacted.
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from gateway.telemetry.redact import Redactor
from gateway.telemetry.spans import RequestTrace

__all__ = ["OPERATIONS", "content_of", "log_line", "server_attributes"]

# The GenAI operation each endpoint performs (gen_ai.operation.name).
OPERATIONS = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_CACHE_HEADER = "x-switchyard-cache"  # gateway/stages/cache.py writes these response headers
_TOOLS_HEADER = "x-switchyard-tools"


def _tools(ctx: Any) -> tuple[int | None, int | None]:
    header = ctx.response_headers.get(_TOOLS_HEADER) if ctx is not None else None
    if not header:
        return None, None
    tools_in, _, tools_out = header.partition("->")
    return int(tools_in), int(tools_out)


def _error_type(trace: RequestTrace) -> str | None:
    error = trace.error
    if error is None and trace.completion is not None:
        error = trace.completion.error
    if error is None:
        return None
    return str(getattr(error, "type", None) or type(error).__name__)


def server_attributes(trace: RequestTrace, method: str, path: str, status: int) -> dict[str, Any]:
    ctx, done = trace.ctx, trace.completion
    attrs: dict[str, Any] = {
        "http.request.method": method,
        "http.route": path,
        "url.path": path,
        "http.response.status_code": status,
        "switchyard.hedges": trace.hedges,
        "switchyard.retries": trace.retries,
    }
    if ctx is not None:
        tools_in, tools_out = _tools(ctx)
        attrs.update(
            {
                "gen_ai.operation.name": OPERATIONS.get(ctx.endpoint, "chat"),
                "gen_ai.request.model": ctx.model or None,
                "switchyard.endpoint": ctx.endpoint,
                "switchyard.request_id": ctx.request_id,
                "switchyard.tenant": ctx.tenant.name,
                "switchyard.priority": ctx.priority,
                "switchyard.stream": ctx.stream,
                "switchyard.cache": ctx.response_headers.get(_CACHE_HEADER),
                "switchyard.tools.in": tools_in,
                "switchyard.tools.out": tools_out,
            }
        )
    if done is not None:
        response = done.response or {}
        attrs.update(
            {
                "gen_ai.response.model": response.get("model"),
                "gen_ai.response.id": response.get("id"),
                "gen_ai.usage.input_tokens": done.prompt_tokens,
                "gen_ai.usage.output_tokens": done.completion_tokens,
                "gen_ai.response.finish_reasons": [done.finish_reason] if done.finish_reason else None,
                "switchyard.backend": done.backend,
                "switchyard.ttft_s": done.ttft,
                "switchyard.cancelled": done.cancelled or None,
                "switchyard.from_cache": done.from_cache or None,
            }
        )
    error_type = _error_type(trace)
    if error_type is not None and status >= 400:
        attrs["error.type"] = error_type
    return {k: v for k, v in attrs.items() if v is not None}


def content_of(trace: RequestTrace, redact: Redactor) -> tuple[str | None, str | None]:
    """The request's prompt and the answer, as JSON text, redacted of keys and of the request's own key."""
    ctx, done = trace.ctx, trace.completion
    if ctx is None:
        return None, None
    key = None
    authorization = ctx.headers.get("authorization") if ctx.headers is not None else None
    if authorization:
        key = authorization.partition(" ")[2].strip() or authorization
    body = ctx.body
    prompt = body.get("messages", body.get("prompt", body.get("input")))
    prompt_text = redact(orjson.dumps(prompt).decode(), (key,)) if prompt is not None else None
    answer_text = None
    if done is not None and done.response:
        outputs = [c.get("message", c.get("text")) for c in done.response.get("choices") or ()]
        if outputs:
            answer_text = redact(orjson.dumps(outputs).decode(), (key,))
    return prompt_text, answer_text


def log_line(trace: RequestTrace, request_id: str, endpoint: str, status: int, duration: float) -> dict[str, Any]:
    ctx, done = trace.ctx, trace.completion
    tools_in, tools_out = _tools(ctx)
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "trace_id": trace.trace_id_hex,
        "tenant": ctx.tenant.name if ctx is not None else None,
        "endpoint": endpoint,
        "model": (ctx.model or None) if ctx is not None else None,
        "backend": done.backend if done is not None else None,
        "status": status,
        "error_type": _error_type(trace) if status >= 400 else None,
        "stream": ctx.stream if ctx is not None else None,
        "cache": ctx.response_headers.get(_CACHE_HEADER) if ctx is not None else None,
        "tools_in": tools_in,
        "tools_out": tools_out,
        "prompt_tokens": done.prompt_tokens if done is not None else None,
        "completion_tokens": done.completion_tokens if done is not None else None,
        "ttft_s": round(done.ttft, 6) if done is not None and done.ttft is not None else None,
        "duration_s": round(duration, 6),
        "hedges": trace.hedges,
        "retries": trace.retries,
        "cancelled": bool(done.cancelled) if done is not None else False,
    }
