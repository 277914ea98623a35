"""The Messages API as the pipeline sees it (gateway/dialect.py): its streams' named events, its
usage and stop reasons, its errors, its replay of a stored answer, and its translation to chat
completions for backends that do not speak it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.anthropic import to_chat, to_messages
from gateway.anthropic.errors import error_body, error_event
from gateway.anthropic.wire import event, named_event
from gateway.dialect import Dialect, StreamTranslation, Translation
from gateway.errors import BadRequest, SwitchyardError
from gateway.replay import token_pieces
from gateway.types import JSON, Api, Endpoint

__all__ = ["FORWARDED_HEADERS", "MESSAGES", "MessagesAssembler", "MessagesDialect", "replay_message"]

# Client headers that say which version and betas of the API it speaks: a native upstream needs them.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


class _Translation:
    """Messages ⇄ chat completions (gateway/anthropic/to_chat.py)."""

    def request(self, body: JSON) -> JSON:
        return to_chat.chat_request(body)

    def response(self, chat: JSON, request: JSON) -> JSON:
        return to_chat.message_response(chat, request)

    def stream(self, request: JSON) -> StreamTranslation:
        return to_chat.MessagesStream(request)


@dataclass
class _Block:
    kind: str
    start: JSON
    parts: list[str] = field(default_factory=list)


class MessagesAssembler:
    """Reads a Messages stream: content is a block that opens with a tool call, a non-empty delta,
    or the stop reason; usage is merged from message_start and message_delta. With `assemble` it
    rebuilds the whole Messages response."""

    def __init__(self, assemble: bool):
        self.assemble = assemble
        self.usage: JSON | None = None
        self.content_chunks = 0
        self._message: JSON = {}
        self._blocks: dict[int, _Block] = {}
        self._stop: JSON = {}

    def feed(self, data: JSON) -> bool:
        kind = data.get("type")
        substantive = False
        if kind == "message_start":
            self._message = data.get("message") or {}
            self.usage = dict(self._message.get("usage") or {})
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            substantive = block.get("type") == "tool_use" or bool(block.get("text"))
            if self.assemble:
                self._blocks[int(data.get("index", 0))] = _Block(str(block.get("type")), block)
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            piece = delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""
            substantive = bool(piece)
            if self.assemble and piece and (slot := self._blocks.get(int(data.get("index", 0)))) is not None:
                slot.parts.append(piece)
        elif kind == "message_delta":
            self._stop = data.get("delta") or {}
            self.usage = {**(self.usage or {}), **{k: v for k, v in (data.get("usage") or {}).items() if v is not None}}
            substantive = bool(self._stop.get("stop_reason"))
        if substantive:
            self.content_chunks += 1
        return substantive

    def response(self, model: str) -> JSON:
        content = []
        for _, block in sorted(self._blocks.items()):
            joined = "".join(block.parts)
            if block.kind == "text":
                content.append({"type": "text", "text": block.start.get("text", "") + joined})
            elif block.kind == "tool_use":
                try:
                    arguments = orjson.loads(joined) if joined else {}
                except orjson.JSONDecodeError:
                    arguments = {}
                content.append(
                    {
                        "type": "tool_use",
                        "id": block.start.get("id"),
                        "name": block.start.get("name"),
                        "input": arguments,
                    }
                )
            elif block.kind == "thinking":
                content.append({"type": "thinking", "thinking": joined, "signature": block.start.get("signature", "")})
        return {
            "id": self._message.get("id", ""),
            "type": "message",
            "role": "assistant",
            "model": self._message.get("model", model),
            "content": content,
            "stop_reason": self._stop.get("stop_reason"),
            "stop_sequence": self._stop.get("stop_sequence"),
            "usage": self.usage or {},
        }


def replay_message(message: JSON) -> list[bytes]:
    """A stored Messages response as the events a streaming Messages server would have sent."""
    head = {k: v for k, v in message.items() if k not in ("content", "usage")}
    usage = message.get("usage") or {}
    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 0}}
    out = [event({"type": "message_start", "message": start}), event({"type": "ping"})]
    for i, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            out.append(
                event({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            )
            for piece in token_pieces(block.get("text", "")):
                out.append(
                    event({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}})
                )
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            out.append(event({"type": "content_block_start", "index": i, "content_block": opening}))
            for piece in token_pieces(orjson.dumps(block.get("input") or {}).decode(), size=16):
                out.append(
                    event(
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        }
                    )
                )
        else:
            out.append(event({"type": "content_block_start", "index": i, "content_block": block}))
        out.append(event({"type": "content_block_stop", "index": i}))
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    out.append(event({"type": "message_delta", "delta": delta, "usage": usage}))
    out.append(event({"type": "message_stop"}))
    return out


class MessagesDialect(Dialect):
    api: Api = "messages"
    endpoint: Endpoint = "messages"
    translation: Translation | None = _Translation()
    stream_end = b""  # a Messages stream ends with its message_stop event

    def stream_body(self, body: JSON) -> JSON:
        return body  # native pass-through: the body as the client sent it (usage comes anyway)

    def assembler(self, assemble: bool) -> MessagesAssembler:
        return MessagesAssembler(assemble)

    def stream_finished(self, last: bytes) -> bool:
        try:
            return bool(orjson.loads(last).get("type") == "message_stop")
        except (orjson.JSONDecodeError, AttributeError):
            return False

    def usage_of(self, response: JSON) -> tuple[int | None, int | None]:
        usage = response.get("usage") or {}
        prompt = usage.get("input_tokens")
        if prompt is not None:
            prompt += int(usage.get("cache_read_input_tokens") or 0) + int(
                usage.get("cache_creation_input_tokens") or 0
            )
        return prompt, usage.get("output_tokens")

    def finish_reason(self, response: JSON) -> str | None:
        reason = response.get("stop_reason")
        return str(reason) if reason is not None else None

    def called_tools(self, response: JSON) -> list[str]:
        return [str(b["name"]) for b in response.get("content") or () if b.get("type") == "tool_use" and b.get("name")]

    def frame(self, raw: bytes, data: JSON, include_usage: bool) -> bytes | None:
        name: Any = data.get("type")
        return named_event(name.encode(), raw) if isinstance(name, str) else None

    def error_event(self, exc: SwitchyardError, last: JSON | None) -> bytes:
        return error_event(exc)

    def render_error(
        self, exc: SwitchyardError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        headers = [(b"content-type", b"application/json"), *extra_headers]
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
        return exc.status, headers, error_body(exc)

    def replay(self, response: JSON, include_usage: bool) -> list[bytes]:
        return replay_message(response)

    def canonical(self, body: JSON) -> JSON | None:
        try:  # the same question asked in chat: Messages and chat clients share cached answers
            return to_chat.chat_request({**body, "stream": False})
        except BadRequest:
            return None  # asks for something chat cannot say (thinking, server tools): not cached

    def as_chat_answer(self, response: JSON) -> JSON | None:
        return to_messages.chat_response(response)

    def from_chat_answer(self, chat: JSON, request: JSON) -> JSON:
        return to_chat.message_response(chat, request)



MESSAGES = MessagesDialect()
