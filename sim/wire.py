"""OpenAI wire format, byte for byte: chunk and response bodies, SSE framing, error bodies.

Streams are hot: each `*Stream` object renders a per-request prefix once, and every chunk is that
prefix plus a small encoded delta, instead of serialising a whole dict per token.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

__all__ = [
    "DONE",
    "ChatStream",
    "CompletionStream",
    "chat_response",
    "completion_response",
    "embedding_item",
    "error_body",
    "usage",
]

DONE = b"data: [DONE]\n\n"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class _Stream:
    """What the streams of both endpoints share: each event's head, and the usage-only last event."""

    def __init__(self, object_: str, id_: str, created: int, model: str, include_usage: bool):
        self._head = orjson.dumps(
            {"id": id_, "object": object_, "created": created, "model": model, "system_fingerprint": None}
        )
        self.include_usage = include_usage

    def usage(self, prompt: int, completion: int) -> bytes:
        """The final chunk of `stream_options.include_usage`: no choices, only usage."""
        return (
            b"data: " + self._head[:-1] + b',"choices":[],"usage":' + orjson.dumps(usage(prompt, completion)) + b"}\n\n"
        )


class ChatStream(_Stream):
    """`chat.completion.chunk` events for one response."""

    def __init__(self, id_: str, created: int, model: str, include_usage: bool):
        super().__init__("chat.completion.chunk", id_, created, model, include_usage)
        self._prefix = b"data: " + self._head[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null}\n\n' if include_usage else b"}\n\n")

    def _event(self, delta: bytes) -> bytes:
        return self._prefix + delta + self._tail

    def role(self, content: str | None = "") -> bytes:
        return self._event(orjson.dumps({"role": "assistant", "content": content, "refusal": None}))

    def content(self, text: str) -> bytes:
        return self._event(b'{"content":' + orjson.dumps(text) + b"}")

    def tool_head(self, call_id: str, name: str) -> bytes:
        """The first tool-call delta: index, id, type and name, with empty arguments (as OpenAI sends it)."""
        return self._event(
            orjson.dumps(
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ],
                }
            )
        )

    def tool_arguments(self, fragment: str) -> bytes:
        return self._event(b'{"tool_calls":[{"index":0,"function":{"arguments":' + orjson.dumps(fragment) + b"}}]}")

    def finish(self, reason: str) -> bytes:
        tail = b"}\n\n" if not self.include_usage else b',"usage":null}\n\n'
        return self._prefix + b'{},"logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]" + tail


class CompletionStream(_Stream):
    """`text_completion` events (legacy completions endpoint) for one response."""

    def __init__(self, id_: str, created: int, model: str, include_usage: bool):
        super().__init__("text_completion", id_, created, model, include_usage)
        self._prefix = b"data: " + self._head[:-1] + b',"choices":[{"index":0,"text":'
        self._usage_tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def content(self, text: str) -> bytes:
        return self._prefix + orjson.dumps(text) + b',"logprobs":null,"finish_reason":null}]' + self._usage_tail

    def finish(self, reason: str) -> bytes:
        return self._prefix + b'"","logprobs":null,"finish_reason":' + orjson.dumps(reason) + b"}]" + self._usage_tail


def chat_response(
    id_: str,
    created: int,
    model: str,
    text: str | None,
    finish: str,
    prompt: int,
    completion: int,
    tool_call: tuple[str, str, str] | None = None,
) -> bytes:
    """A whole `chat.completion`; `tool_call` is (id, name, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_call is not None:
        call_id, name, arguments = tool_call
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
    return orjson.dumps(
        {
            "id": id_,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage(prompt, completion),
        }
    )


def completion_response(
    id_: str, created: int, model: str, text: str, finish: str, prompt: int, completion: int
) -> bytes:
    return orjson.dumps(
        {
            "id": id_,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            "usage": usage(prompt, completion),
        }
    )


def embedding_item(index: int, vector: Any, encoding: str) -> dict[str, Any]:
    """One `data` item; `vector` is a float32 numpy array."""
    value: Any = base64.b64encode(vector.tobytes()).decode("ascii") if encoding == "base64" else vector.tolist()
    return {"object": "embedding", "index": index, "embedding": value}
