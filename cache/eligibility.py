"""What may enter the cache and what may leave it: request eligibility, response storability and
whether a stored answer fits a request's token limit. Pure functions; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache.keys import effective_temperature

__all__ = ["Decision", "check_request", "check_response", "requested_max_tokens", "serves_max_tokens"]

_FINISHED = frozenset({"stop", "tool_calls", "function_call"})


@dataclass(frozen=True)
class Decision:
    ok: bool
    cause: str = ""  # a short bounded word: "temperature", "n", "length", ...
    truncated: bool = False  # a storable response that ended at the request's own max_tokens


def requested_max_tokens(request: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = request.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_request(request: dict[str, Any], *, max_temperature: float, default_temperature: float) -> Decision:
    """Is the request deterministic enough for one answer to serve every asker?"""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(request.get("model"), str):
        return Decision(False, "malformed")
    n = request.get("n")
    if n is not None and n != 1:
        return Decision(False, "n")
    temperature = effective_temperature(request, default_temperature)
    if temperature > max_temperature:
        return Decision(False, "temperature")
    return Decision(True)


def _usage_completion_tokens(response: dict[str, Any]) -> int | None:
    usage = response.get("usage")
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


def check_response(response: Any, max_tokens: int | None) -> Decision:
    """May this complete chat.completion be stored? Errors, partial answers, filtered answers,
    empty answers and answers cut short by anything but the request's own max_tokens may not."""
    if not isinstance(response, dict) or "error" in response:
        return Decision(False, "error")
    if response.get("object", "chat.completion") != "chat.completion":
        return Decision(False, "malformed")
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return Decision(False, "choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        return Decision(False, "malformed")
    finish = choice.get("finish_reason")
    calls = message.get("tool_calls") or message.get("function_call")
    content = message.get("content")
    has_text = isinstance(content, str) and content.strip() != ""
    if finish is None:
        return Decision(False, "incomplete")
    if finish == "content_filter":
        return Decision(False, "content_filter")
    if not has_text and not calls:
        return Decision(False, "empty")
    if finish == "tool_calls" and not message.get("tool_calls"):
        return Decision(False, "empty")
    if finish == "length":
        used = _usage_completion_tokens(response)
        # Expected only when the client set max_tokens and the answer used all of it.
        if max_tokens is None or (used is not None and used < max_tokens):
            return Decision(False, "length")
        return Decision(True, truncated=True)
    if finish not in _FINISHED:
        return Decision(False, "finish_reason")
    return Decision(True)


def serves_max_tokens(*, truncated: bool, stored_max_tokens: int | None, completion_tokens: int | None,
                      requested: int | None) -> bool:
    """Does a stored answer fit this request's token limit? A complete answer fits any limit it is
    within; an answer cut at max_tokens only serves the same limit."""
    if truncated:
        return requested == stored_max_tokens
    return requested is None or completion_tokens is None or completion_tokens <= requested
