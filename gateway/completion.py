"""What a finished request produced, and how a streamed one is put back together.

The relay feeds every upstream chunk through a `StreamAssembler`: it says whether the chunk carries
anything a user sees (content, tool calls, a finish reason), picks up usage, and, when asked,
rebuilds the equivalent non-streamed response for the cache and the tool router's feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import SwitchyardError
from gateway.types import JSON, Endpoint

__all__ = ["Completion", "StreamAssembler", "cached_tokens_of", "called_tools", "usage_of"]


@dataclass(slots=True)
class Completion:
    endpoint: Endpoint
    model: str
    backend: str | None
    ok: bool
    cancelled: bool = False
    response: JSON | None = None  # the non-streamed shape (as received, or assembled from chunks)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the upstream served from its prompt cache
    finish_reason: str | None = None
    ttft: float | None = None  # seconds from upstream send to first content
    duration: float | None = None  # seconds from upstream send to the end
    from_cache: bool = False
    error: SwitchyardError | None = None  # what the client was told when the request failed

    @property
    def tool_calls(self) -> list[str]:
        return called_tools(self.response) if self.response else []


def usage_of(response: JSON) -> tuple[int | None, int | None]:
    usage = response.get("usage") or {}
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def cached_tokens_of(response: JSON) -> int | None:
    """Cached prompt tokens as OpenAI reports them (`usage.prompt_tokens_details.cached_tokens`)."""
    details = (response.get("usage") or {}).get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and cached >= 0 else None


def called_tools(response: JSON) -> list[str]:
    """Names of the functions a chat.completion response called."""
    names: list[str] = []
    for choice in response.get("choices") or ():
        for call in (choice.get("message") or {}).get("tool_calls") or ():
            name = (call.get("function") or {}).get("name")
            if name:
                names.append(name)
    return names


@dataclass
class _ToolCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Inspects a stream's chunks one by one; rebuilds the whole response only when `assemble` is on."""

    def __init__(self, endpoint: Endpoint, *, assemble: bool):
        self.endpoint = endpoint
        self.assemble = assemble
        self.usage: JSON | None = None
        self.finish_reason: str | None = None
        self.content_chunks = 0
        self._head: JSON | None = None
        self._text: list[str] = []
        self._role = "assistant"
        self._tools: dict[int, _ToolCall] = {}

    def feed(self, chunk: JSON) -> bool:
        """Record one chunk; True when it carries something the user sees."""
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices") or ()
        substantive = False
        for choice in choices:
            if choice.get("index", 0) != 0:
                substantive = substantive or _has_substance(choice, self.endpoint)
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                substantive = True
            if self.endpoint == "completions":
                text = choice.get("text")
                if text:
                    substantive = True
                    if self.assemble:
                        self._text.append(text)
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            calls = delta.get("tool_calls")
            if content or calls or delta.get("reasoning_content"):
                substantive = True
            if self.assemble:
                if self._head is None:
                    self._head = chunk
                if delta.get("role"):
                    self._role = delta["role"]
                if content:
                    self._text.append(content)
                for call in calls or ():
                    self._merge_call(call)
        if substantive:
            self.content_chunks += 1
        return substantive

    def _merge_call(self, call: JSON) -> None:
        slot = self._tools.setdefault(int(call.get("index", 0)), _ToolCall())
        if call.get("id"):
            slot.id = call["id"]
        if call.get("type"):
            slot.type = call["type"]
        fn = call.get("function") or {}
        if fn.get("name"):
            slot.name += fn["name"]
        if fn.get("arguments"):
            slot.arguments.append(fn["arguments"])

    def response(self, model: str) -> JSON:
        """The non-streamed equivalent of what was streamed (choice 0 only)."""
        head = self._head or {}
        text = "".join(self._text)
        if self.endpoint == "completions":
            choice: JSON = {"index": 0, "text": text, "finish_reason": self.finish_reason, "logprobs": None}
            obj = "text_completion"
        else:
            message: JSON = {"role": self._role, "content": text or None}
            if self._tools:
                message["tool_calls"] = [
                    {
                        "id": t.id,
                        "type": t.type,
                        "function": {"name": t.name, "arguments": "".join(t.arguments)},
                    }
                    for _, t in sorted(self._tools.items())
                ]
            choice = {"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": None}
            obj = "chat.completion"
        out: JSON = {
            "id": head.get("id", ""),
            "object": obj,
            "created": head.get("created", 0),
            "model": head.get("model", model),
            "choices": [choice],
        }
        if self.usage:
            out["usage"] = self.usage
        return out


def _has_substance(choice: Any, endpoint: Endpoint) -> bool:
    if choice.get("finish_reason"):
        return True
    if endpoint == "completions":
        return bool(choice.get("text"))
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls"))
