"""Which tools a conversation names, read from its messages and `tool_choice` (pure, no I/O).

The intent text the router embeds is the gateway's to compute; `ToolRouter.narrow` takes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["called_tools", "forced_tools"]

def called_tools(messages: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of the tools already called in the conversation (assistant `tool_calls`, legacy `function_call`)."""
    names: set[str] = set()
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in ("assistant", "function"):
            continue
        if message.get("role") == "function" and isinstance(message.get("name"), str):
            names.add(message["name"])
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                names.add(function["name"])
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping) and isinstance(legacy.get("name"), str):
            names.add(legacy["name"])
    return names


def forced_tools(tool_choice: Any) -> set[str]:
    """Tools that `tool_choice` names: one forced function, or an `allowed_tools` list."""
    if not isinstance(tool_choice, Mapping):
        return set()  # "auto", "none", "required" or absent name no tool in particular
    if tool_choice.get("type") == "allowed_tools":
        allowed = tool_choice.get("allowed_tools")
        tools = allowed.get("tools") if isinstance(allowed, Mapping) else None
        return set(_names(tools or ()))
    return set(_names([tool_choice]))


def _names(items: Iterable[Any]) -> Iterable[str]:
    for item in items:
        if not isinstance(item, Mapping):
            continue
        function = item.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            yield function["name"]
        elif isinstance(item.get("name"), str):  # the Responses API shape: {"type": "function", "name": ...}
            yield item["name"]
