"""The Responses API's `Dialect`: typed SSE events (`event: <type>`), no `[DONE]`, usage in
`input_tokens`/`output_tokens`, the whole answer in the closing `response.completed` event."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialect import Dialect
from gateway.errors import BadRequest, SwitchyardError
from gateway.openai.responses.translate import (
    ResponsesTranslation,
    chat_from_response,
    new_id,
    request_to_chat,
    response_from_chat,
)
from gateway.replay import token_pieces
from gateway.types import JSON

__all__ = ["RESPONSES", "ResponsesAssembler", "ResponsesDialect", "replay_response"]

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
# Events that carry something the user sees: the relay commits to a backend at the first one.
_CONTENT = {
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.completed",
    "response.incomplete",
}


class ResponsesAssembler:
    """Commits at the first content event; the whole answer is the closing event's `response`."""

    def __init__(self) -> None:
        self.usage: JSON | None = None
        self.content_chunks = 0
        self._final: JSON | None = None
        self._started: JSON | None = None

    def feed(self, event: JSON) -> bool:
        kind = event.get("type")
        if kind in TERMINAL:
            self._final = event.get("response") or {}
            self.usage = self._final.get("usage")
        elif kind == "response.created":
            self._started = event.get("response")
        substantive = kind in _CONTENT or (
            kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call"
        )
        if substantive:
            self.content_chunks += 1
        return substantive

    def response(self, model: str) -> JSON:
        return self._final or self._started or {"object": "response", "model": model, "output": []}


class ResponsesDialect(Dialect):
    api = "responses"
    endpoint = "responses"
    translation = ResponsesTranslation()
    stream_end = b""

    def canonical(self, body: JSON) -> JSON | None:
        try:
            return request_to_chat({**body, "stream": False})
        except BadRequest:
            return None  # native-only fields: the stages leave the request alone

    def as_chat_answer(self, response: JSON) -> JSON | None:
        return chat_from_response(response)

    def from_chat_answer(self, chat: JSON, request: JSON) -> JSON:
        return response_from_chat(chat, request)

    def stream_body(self, body: JSON) -> JSON:
        return body  # Responses streams always end with usage

    def assembler(self, assemble: bool) -> ResponsesAssembler:
        return ResponsesAssembler()

    def stream_finished(self, last: bytes) -> bool:
        try:
            return orjson.loads(last).get("type") in TERMINAL
        except (orjson.JSONDecodeError, AttributeError):
            return False

    def error_in(self, event: JSON) -> str | None:
        kind = event.get("type")
        if kind == "error":
            return str(event.get("message") or "error")
        if kind == "response.failed":
            error = (event.get("response") or {}).get("error") or {}
            return str(error.get("message") or "the response failed")
        return super().error_in(event)

    def usage_of(self, response: JSON) -> tuple[int | None, int | None]:
        usage = response.get("usage") or {}
        return usage.get("input_tokens"), usage.get("output_tokens")

    def finish_reason(self, response: JSON) -> str | None:
        if self.called_tools(response):
            return "tool_calls"
        status = response.get("status")
        return {"completed": "stop", "incomplete": "length"}.get(status or "", status)

    def called_tools(self, response: JSON) -> list[str]:
        return [
            str(item["name"])
            for item in response.get("output") or ()
            if isinstance(item, dict) and item.get("type") == "function_call" and item.get("name")
        ]

    def frame(self, raw: bytes, event: JSON, include_usage: bool) -> bytes:
        return b"event: " + str(event.get("type", "message")).encode() + b"\ndata: " + raw + b"\n\n"

    def holds(self, event: JSON) -> bool:
        return event.get("type") in TERMINAL

    def error_event(self, exc: SwitchyardError, last: JSON | None) -> bytes:
        # OpenAI's `error` event (type, code, message, param), plus the `error` object the SDKs
        # raise on.
        sequence = int((last or {}).get("sequence_number", -1)) + 1
        error = exc.to_dict()["error"]
        event = {"type": "error", "sequence_number": sequence, **error, "error": error}
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def replay(self, response: JSON, include_usage: bool) -> list[bytes]:
        return [self.frame(orjson.dumps(e), e, True) for e in replay_response(response)]


def replay_response(response: JSON) -> list[JSON]:
    """A whole `response` object as the event sequence a streaming backend would have sent."""
    events: list[JSON] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    start = {**response, "status": "in_progress", "output": [], "usage": None}
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for index, item in enumerate(response.get("output") or ()):
        kind = item.get("type")
        item_id = item.get("id") or new_id("item")
        if kind == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in token_pieces(item.get("arguments") or "", size=16):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
                 name=item.get("name"), arguments=item.get("arguments") or "")  # fmt: skip
        elif kind == "message":
            emit(
                "response.output_item.added", output_index=index, item={**item, "content": [], "status": "in_progress"}
            )
            for c, part in enumerate(item.get("content") or ()):
                where = {"item_id": item_id, "output_index": index, "content_index": c}
                text = part.get("text") or ""
                emit("response.content_part.added", **where, part={**part, "text": ""})
                if part.get("type") == "output_text":
                    for piece in token_pieces(text):
                        emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                    emit("response.output_text.done", **where, text=text, logprobs=[])
                emit("response.content_part.done", **where, part=part)
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response)  # whatever the status, as the translation does
    return events


RESPONSES = ResponsesDialect()
