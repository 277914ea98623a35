"""A stored chat or completions answer replayed as the chunks a streaming backend would have sent."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.types import JSON

__all__ = ["replay_events", "token_pieces"]


def replay_events(response: JSON, *, include_usage: bool, endpoint: str = "chat/completions") -> list[bytes]:
    """Turn a stored chat.completion into the chunks a streaming backend would have sent."""
    head: dict[str, Any] = {
        "id": response.get("id", ""),
        "object": "chat.completion.chunk",
        "created": response.get("created", 0),
        "model": response.get("model", ""),
    }
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    chunks: list[JSON] = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ]
    for piece in token_pieces(message.get("content") or ""):
        chunks.append({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        chunks.append(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call.get("id"),
                                    "type": "function",
                                    "function": {"name": fn.get("name"), "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
        for piece in token_pieces(fn.get("arguments") or "", size=16):
            chunks.append(
                {
                    **head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": i, "function": {"arguments": piece}}]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and response.get("usage"):
        chunks.append({**head, "choices": [], "usage": response["usage"]})
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]


def token_pieces(text: str, size: int = 0) -> list[str]:
    """Split text into token-sized pieces (a word and its leading space), or fixed-size slices."""
    if not text:
        return []
    if size:
        return [text[i : i + size] for i in range(0, len(text), size)]
    pieces: list[str] = []
    current = ""
    for ch in text:
        if ch in " \n" and current.strip():
            pieces.append(current)
            current = ""
        current += ch
    if current:
        pieces.append(current)
    return pieces
