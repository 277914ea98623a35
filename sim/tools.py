"""Which tool the sim calls and with what arguments, chosen deterministically from the request.

`tool_choice` wins ("none", "required", or a named function); otherwise the tool whose name and
description share the most words with the last user message, else the first tool.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["choose_tool", "split_arguments", "tool_arguments", "tool_name"]

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_STOP = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "by",
        "at",
        "from",
        "is",
        "are",
        "be",
        "was",
        "what",
        "which",
        "how",
        "please",
        "can",
        "could",
        "you",
        "me",
        "my",
        "i",
        "it",
        "this",
        "that",
        "get",
    }
)


def tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict):
        fn = tool.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    return None


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(_CAMEL.sub(" ", text).lower()) if w not in _STOP}


def choose_tool(tools: list[Any], tool_choice: Any, user_text: str, forced: str | None = None) -> dict[str, Any] | None:
    """The tool to call, or None when the request rules tool calls out."""
    named = [t for t in tools if tool_name(t) is not None]
    if not named or tool_choice == "none":
        return None
    if forced is None and isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        forced = fn.get("name") if isinstance(fn, dict) else None
    if forced is not None:
        return next((t for t in named if tool_name(t) == forced), None)
    query = _words(user_text)
    best, best_score = named[0], 0
    for tool in named:
        fn = tool["function"]
        name_words = _words(str(fn["name"]).replace("_", " ").replace(".", " ").replace("-", " "))
        desc_words = _words(str(fn.get("description") or ""))
        score = 2 * len(query & name_words) + len(query & desc_words)
        if score > best_score:
            best, best_score = tool, score
    return dict(best)


def _value(schema: Any, key: str, words: list[str]) -> Any:
    if not isinstance(schema, dict):
        return words[0] if words else key
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return 1 + len(key) % 9
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value(schema.get("items"), key, words)]
    if kind == "object":
        return _object(schema, words)
    return " ".join(words[:2]) if words else key


def _object(schema: dict[str, Any], words: list[str]) -> dict[str, Any]:
    raw = schema.get("properties")
    props: dict[str, Any] = raw if isinstance(raw, dict) else {}
    required = schema.get("required")
    keys = [k for k in props if not isinstance(required, list) or k in required] or list(props)[:1]
    return {k: _value(props[k], k, words) for k in keys}


def tool_arguments(tool: dict[str, Any], user_text: str) -> str:
    """JSON arguments that satisfy the tool's schema (required properties, filled from the user's words)."""
    params = tool.get("function", {}).get("parameters")
    words = [w for w in _WORD.findall(user_text.lower()) if w not in _STOP]
    return json.dumps(_object(params, words) if isinstance(params, dict) else {}, separators=(",", ":"))


def split_arguments(arguments: str, pieces: int) -> list[str]:
    """`arguments` cut into at most `pieces` non-empty fragments of near-equal length, in order."""
    pieces = max(1, min(pieces, len(arguments)))
    if not arguments:
        return [""]
    size, extra = divmod(len(arguments), pieces)
    out, i = [], 0
    for p in range(pieces):
        step = size + (1 if p < extra else 0)
        out.append(arguments[i : i + step])
        i += step
    return out
