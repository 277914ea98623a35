"""Messages clients, chat backends: a Messages request as a chat completions request, and the chat
answer (whole, or chunk by chunk) back as a Messages response or Messages SSE events. Pure.

What chat completions cannot express is refused with a 400 naming the field, never dropped. The
one kind of field accepted and left out is a hint that cannot change the answer: `cache_control`
(prompt caching) and earlier turns' `thinking` blocks (Anthropic's own API ignores those too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import orjson

from gateway.anthropic.wire import STOP_REASONS, message_id
from gateway.dialect import ChatStreamTranslation
from gateway.errors import BadRequest, UpstreamError
from gateway.types import JSON

__all__ = ["MessagesStream", "chat_request", "message_response", "tool_choice"]

_TRANSLATED = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
}
_TEXT_KEYS = {"type", "text", "cache_control", "citations"}
_HINTS = ("cache_control",)


def _refuse(param: str, what: str) -> BadRequest:
    return BadRequest(f"{what} cannot be honoured by a backend that speaks only chat completions.", param=param)


def chat_request(body: JSON) -> JSON:
    """The chat completions request that asks what the Messages request `body` asks."""
    for key in body:
        if key not in _TRANSLATED:
            raise _refuse(key, f"'{key}'")
    out: JSON = {"model": body["model"], "messages": _messages(body), "max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # message_delta reports usage
    _metadata(body.get("metadata"), out)
    _thinking(body.get("thinking"))
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _refuse("service_tier", f"service_tier {body['service_tier']!r}")
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(tool_choice(choice))
    return out


def _metadata(metadata: Any, out: JSON) -> None:
    if not metadata:
        return
    for key, value in metadata.items():
        if key != "user_id":
            raise _refuse(f"metadata.{key}", f"metadata '{key}'")
        if value is not None:
            out["user"] = str(value)


def _thinking(thinking: Any) -> None:
    if thinking is not None and thinking.get("type") != "disabled":
        raise _refuse("thinking", "Extended thinking")


def _tool(tool: JSON, i: int) -> JSON:
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _refuse(f"tools[{i}].type", f"The server tool {kind!r}")
    for key in tool:
        if key not in ("type", "name", "description", "input_schema", *_HINTS):
            raise _refuse(f"tools[{i}].{key}", f"The tool field '{key}'")
    if not isinstance(tool.get("input_schema"), dict):
        raise BadRequest(f"Missing required parameter: 'tools[{i}].input_schema'.", param=f"tools[{i}].input_schema")
    function: JSON = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def tool_choice(choice: JSON) -> JSON:
    kind = choice.get("type")
    out: JSON
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise BadRequest("Missing required parameter: 'tool_choice.name'.", param="tool_choice.name")
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    elif kind == "none":
        return {"tool_choice": "none"}
    else:
        raise BadRequest("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'.", param="tool_choice.type")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# -- messages ------------------------------------------------------------------------------------


def _messages(body: JSON) -> list[JSON]:
    out: list[JSON] = []
    system = body.get("system")
    if system:
        out.append({"role": "system", "content": _system(system)})
    for i, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif message["role"] == "assistant":
            out.append(_assistant(content, f"messages[{i}].content"))
        else:
            out.extend(_user(content, f"messages[{i}].content"))
    return out


def _system(system: str | list[JSON]) -> str | list[JSON] | None:
    if isinstance(system, str):
        return system
    return _joined([_text(block, f"system[{j}]") for j, block in enumerate(system)])


def _text(block: Any, where: str) -> JSON:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise BadRequest(f"'{where}' must be a text block.", param=where)
    for key in block:
        if key not in _TEXT_KEYS:
            raise _refuse(f"{where}.{key}", f"The text block field '{key}'")
    if block.get("citations"):
        raise _refuse(f"{where}.citations", "Citations")
    return {"type": "text", "text": block["text"]}


def _image(block: JSON, where: str) -> JSON:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif kind == "url":
        url = str(source.get("url", ""))
    else:
        raise _refuse(f"{where}.source.type", f"An image source of type {kind!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _assistant(blocks: Sequence[Any], where: str) -> JSON:
    parts: list[JSON] = []
    calls: list[JSON] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(_text(block, f"{where}[{j}]"))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input", {})).decode()},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' reasoning: not part of the prompt (as in Anthropic's API)
        else:
            raise _refuse(f"{where}[{j}].type", f"An assistant content block of type {kind!r}")
    message: JSON = {"role": "assistant", "content": _joined(parts)}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: Sequence[Any], where: str) -> list[JSON]:
    """A user turn: its tool results first (chat wants them right after the assistant's calls),
    then one user message with the rest."""
    results: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(_text(block, f"{where}[{j}]"))
        elif kind == "image":
            parts.append(_image(block, f"{where}[{j}]"))
        elif kind == "tool_result":
            results.append(_tool_result(block, f"{where}[{j}]"))
        else:
            raise _refuse(f"{where}[{j}].type", f"A user content block of type {kind!r}")
    out = results
    if parts or not results:
        content: Any = _joined(parts) if all(p["type"] == "text" for p in parts) else parts
        out.append({"role": "user", "content": content if content is not None else ""})
    return out


def _tool_result(block: JSON, where: str) -> JSON:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "\n".join(_text(part, f"{where}.content[{k}]")["text"] for k, part in enumerate(content))
    if block.get("is_error"):
        text = "Error: " + text  # chat has no error flag on tool results: say it in the text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _joined(parts: list[JSON]) -> str | list[JSON] | None:
    """Content parts as chat content: a lone text part is a plain string (None: no parts)."""
    if not parts:
        return None
    return parts[0]["text"] if len(parts) == 1 else parts


# -- answers -------------------------------------------------------------------------------------


def _stop(finish_reason: str | None, matched: Any, stop_sequences: Sequence[str]) -> tuple[str | None, str | None]:
    """(stop_reason, stop_sequence). vLLM names the stop string that matched in `stop_reason`."""
    if finish_reason == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    if finish_reason is None:
        return None, None
    return STOP_REASONS.get(finish_reason, "end_turn"), None


def _usage(usage: Any) -> JSON:
    usage = usage or {}
    out: JSON = {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached:
        out["input_tokens"] -= int(cached)
        out["cache_read_input_tokens"] = int(cached)
    return out


def _tool_input(arguments: Any, backend_name: str = "backend") -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"the {backend_name} called a tool with arguments that are not a JSON object")
    return parsed


def message_response(chat: JSON, request: JSON) -> JSON:
    """A chat.completion (choice 0) as the Messages response to `request`."""
    choices = chat.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _tool_input(fn.get("arguments")),
            }
        )
    stop_reason, stop_sequence = _stop(
        choice.get("finish_reason"), choice.get("stop_reason"), request.get("stop_sequences") or ()
    )
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": request.get("model") or chat.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(chat.get("usage")),
    }


class MessagesStream(ChatStreamTranslation):
    """Chat chunks in, Messages events out (their data; `wire.event` frames them), one chunk at a time.

    Messages streams content as numbered blocks (text, tool_use, thinking), each opened, fed deltas
    and closed; chat streams deltas of one message. A block opens when a delta of a new kind (or a
    new tool call) arrives and closes when the next one opens or the answer ends. The stop reason
    and usage arrive last in chat (usage in a chunk of its own), so message_delta and message_stop
    are sent once the upstream stream has ended (`close()`).
    """

    def __init__(self, request: JSON):
        super().__init__()
        self.model = request.get("model")
        self.stop_sequences: Sequence[str] = request.get("stop_sequences") or ()
        self._index = -1
        self._open: str | None = None  # kind of the open block: "text", "thinking", "tool:<n>"

    def _start(self, chunk: JSON, out: list[JSON]) -> None:
        message: JSON = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model or chunk.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # chat reports usage only at the end: message_delta carries the real figures
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append({"type": "message_start", "message": message})
        out.append({"type": "ping"})

    def _text(self, kind: Literal["reasoning", "content"], text: str, out: list[JSON]) -> None:
        if kind == "reasoning":
            if self._open != "thinking":
                self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta({"type": "thinking_delta", "thinking": text}))
        else:
            if self._open != "text":
                self._open_block("text", {"type": "text", "text": ""}, out)
            out.append(self._delta({"type": "text_delta", "text": text}))

    def _tool_call(self, call: JSON, out: list[JSON]) -> None:
        kind = f"tool:{call.get('index', 0)}"
        fn = call.get("function") or {}
        if self._open != kind:
            block: JSON = {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": {}}
            self._open_block(kind, block, out)
        if fn.get("arguments"):
            out.append(self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))

    def _finished(self, out: list[JSON]) -> None:
        self._close_block(out)

    def _end(self, out: list[JSON]) -> None:
        self._close_block(out)
        stop_reason, stop_sequence = _stop(self.finish_reason, self.matched, self.stop_sequences)
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        out.append({"type": "message_delta", "delta": delta, "usage": _usage(self.usage)})
        out.append({"type": "message_stop"})

    def _open_block(self, kind: str, block: JSON, out: list[JSON]) -> None:
        self._close_block(out)
        self._index += 1
        self._open = kind
        out.append({"type": "content_block_start", "index": self._index, "content_block": block})

    def _close_block(self, out: list[JSON]) -> None:
        if self._open is not None:
            self._open = None
            out.append({"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: JSON) -> JSON:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}
