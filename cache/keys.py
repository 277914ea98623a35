"""Cache keys: what makes two requests the same (exact layer) or comparable (semantic scope).

Exact key: a hash of the canonical request: tenant, model, messages, tools and every parameter
that can change the answer. Scope key: the same minus the latest user turn, so that the
semantic layer only compares prompts asked in the same context: same tenant, model, sampling and
format parameters, system prompt, tools and earlier turns. The tenant is in both hashes and is
never part of any embedded text.

Pure functions of the request body; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["RequestKeys", "canonical_messages", "effective_temperature", "request_keys"]

# Request fields that do not change the answer (or are handled elsewhere: max_tokens decides at
# serving time whether a stored answer fits, see `eligibility.serves_max_tokens`).
_NOT_IN_KEY = frozenset({
    "model", "messages", "tools", "functions", "stream", "stream_options", "user", "metadata", "store",
    "service_tier", "max_tokens", "max_completion_tokens", "n", "temperature",
})
_KEY_VERSION = 1


@dataclass(frozen=True)
class RequestKeys:
    exact: str
    scope: str | None  # None: the semantic layer cannot serve this request (last turn is not user text)


def _text_of(content: Any) -> str | None:
    """A message's text: a string, or a list of only text parts joined; None if it has other parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    return None


def canonical_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Messages with representation noise removed: text parts joined into a string, tool-call ids
    (random per response) renumbered in order of appearance."""
    ids: dict[str, str] = {}

    def call_id(value: Any) -> str:
        return ids.setdefault(str(value), f"call_{len(ids)}")

    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            out.append({"invalid": repr(message)})
            continue
        m: dict[str, Any] = {"role": message.get("role")}
        content = message.get("content")
        text = _text_of(content)
        m["content"] = text if text is not None else content
        if message.get("name") is not None:
            m["name"] = message["name"]
        if message.get("tool_calls"):
            m["tool_calls"] = [
                {"id": call_id(c.get("id")), "type": c.get("type", "function"), "function": c.get("function")}
                if isinstance(c, dict) else c
                for c in message["tool_calls"]
            ]
        if message.get("tool_call_id") is not None:
            m["tool_call_id"] = call_id(message["tool_call_id"])
        if message.get("function_call") is not None:
            m["function_call"] = message["function_call"]
        out.append(m)
    return out


def _canonical_tools(tools: Any) -> Any:
    """Tools as a set: order in the list does not change which tool fits."""
    if not isinstance(tools, list):
        return tools
    return sorted(tools, key=lambda t: json.dumps(t, sort_keys=True, default=str))


def effective_temperature(request: dict[str, Any], default: float) -> float:
    value = request.get("temperature")
    return float(value) if isinstance(value, int | float) else default


def _params(request: dict[str, Any], default_temperature: float) -> dict[str, Any]:
    """Every field that can change the answer. Fields we do not know are kept: an unknown field is
    assumed to matter."""
    params = {k: v for k, v in request.items() if k not in _NOT_IN_KEY and v is not None}
    params["temperature"] = round(effective_temperature(request, default_temperature), 4)
    return params


def _digest(kind: str, payload: dict[str, Any]) -> str:
    blob = json.dumps({"v": _KEY_VERSION, "kind": kind, **payload}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def request_keys(tenant: str, request: dict[str, Any], default_temperature: float = 1.0) -> RequestKeys:
    messages = request.get("messages")
    messages = messages if isinstance(messages, list) else []
    canon = canonical_messages(messages)
    common = {
        "tenant": tenant,
        "model": request.get("model"),
        "tools": _canonical_tools(request.get("tools")),
        "functions": _canonical_tools(request.get("functions")),
        "params": _params(request, default_temperature),
    }
    exact = _digest("exact", {**common, "messages": canon})
    # The semantic layer compares the latest user turn only when it is the last message and all text:
    # mid tool-loop the answer depends on tool results, and an image changes what is asked.
    last = canon[-1] if canon else None
    if last is None or last.get("role") != "user" or not isinstance(last.get("content"), str):
        return RequestKeys(exact, None)
    if not last["content"].strip():
        return RequestKeys(exact, None)
    return RequestKeys(exact, _digest("scope", {**common, "history": canon[:-1]}))
