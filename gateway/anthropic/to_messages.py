"""Chat clients, Messages backends: a chat completions request as a Messages request, and the
Messages answer (whole, or event by event) back as a chat completion or chat chunks. Pure.

The reverse of `to_chat`, for backends of type `anthropic`. What the Messages API cannot express
(several choices, logprobs, penalties, a seed, response formats) is a 400 naming the field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.anthropic.wire import FINISH_REASONS
from gateway.errors import BadRequest, UpstreamError
from gateway.types import JSON

__all__ = ["DEFAULT_MAX_TOKENS", "ChatChunks", "chat_response", "messages_request"]

# Messages requires max_tokens; chat does not. A chat request without one gets this.
DEFAULT_MAX_TOKENS = 4096

_TRANSLATED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
}
# Fields chat clients send with values that ask for nothing Messages lacks.
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "response_format": (None, {"type": "text"}),
}


def _refuse(param: str, what: str) -> BadRequest:
    return BadRequest(f"{what} cannot be honoured by a backend that speaks only the Messages API.", param=param)


def messages_request(body: JSON) -> JSON:
    """The Messages request that asks what the chat completions request `body` asks."""
    for key, value in body.items():
        allowed = _HARMLESS.get(key)
        if allowed is not None:
            if value not in allowed:
                raise _refuse(key, f"'{key}' = {value!r}")
        elif key not in _TRANSLATED:
            raise _refuse(key, f"'{key}'")
    system, messages = _messages(body["messages"])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: JSON = {"model": body["model"], "max_tokens": max_tokens, "messages": messages}
    if system:
        out["system"] = system
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 1:
            raise BadRequest("A Messages backend takes a temperature from 0 to 1.", param="temperature")
        out["temperature"] = temperature
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("tools"):
        out["tools"] = [_tool(t, i) for i, t in enumerate(body["tools"])]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool(tool: JSON, i: int) -> JSON:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise _refuse(f"tools[{i}].type", f"A tool of type {tool.get('type')!r}")
    fn = tool["function"]
    out: JSON = {"name": fn.get("name")}
    if fn.get("description") is not None:
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any, parallel: Any) -> JSON | None:
    out: JSON | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or a named function.", param="tool_choice")
    if parallel is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


# -- messages ------------------------------------------------------------------------------------


def _messages(messages: list[JSON]) -> tuple[list[JSON], list[JSON]]:
    """(system blocks, turns): system and developer messages become the system prompt; tool
    results become tool_result blocks of a user turn; consecutive turns of one role merge."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = list(_user_blocks(message.get("content"), where))
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            role = "assistant"
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else "".join(b["text"] for b in _text_blocks(content, where))
            blocks = [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": text}]
            role = "user"
        else:
            raise _refuse(f"{where}.role", f"A message of role {role!r}")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _text_blocks(content: Any, where: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _refuse(f"{where}.content[{j}].type", f"A content part of type {part.get('type')!r} here")
        blocks.append({"type": "text", "text": part.get("text", "")})
    return blocks


def _user_blocks(content: Any, where: str) -> Iterator[JSON]:
    if isinstance(content, str) or content is None:
        yield {"type": "text", "text": content or ""}
        return
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            yield {"type": "text", "text": part.get("text", "")}
        elif kind == "image_url":
            yield _image((part.get("image_url") or {}).get("url", ""), f"{where}.content[{j}]")
        else:
            raise _refuse(f"{where}.content[{j}].type", f"A content part of type {kind!r}")


def _image(url: str, where: str) -> JSON:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].removesuffix(";base64")
        if not head.endswith(";base64"):
            raise BadRequest("An image data URL must be base64-encoded.", param=f"{where}.image_url.url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    blocks = _text_blocks(message.get("content"), where)
    for k, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        try:
            arguments = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise BadRequest(
                "Tool call arguments must be a JSON object.", param=f"{where}.tool_calls[{k}].function.arguments"
            )
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments})
    return blocks


# -- answers -------------------------------------------------------------------------------------


def _chat_id(message_id: Any) -> str:
    return "chatcmpl-" + str(message_id or "").removeprefix("msg_")


def _chat_usage(usage: Any) -> JSON:
    usage = usage or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    out: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def chat_response(message: JSON) -> JSON:
    """A Messages response as a chat.completion."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[JSON] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    out_message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        out_message["reasoning_content"] = "".join(reasoning)
    if calls:
        out_message["tool_calls"] = calls
    choice: JSON = {
        "index": 0,
        "message": out_message,
        "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
        "logprobs": None,
    }
    return {
        "id": _chat_id(message.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [choice],
        "usage": _chat_usage(message.get("usage")),
    }


class ChatChunks:
    """Messages events in (their parsed data), chat chunks out.

    Text and thinking deltas become content and reasoning_content deltas; each tool_use block
    becomes a tool call (its index counted among tool calls), its input_json_delta fragments the
    call's argument fragments. message_delta gives the finish chunk; message_stop the usage chunk
    (the relay strips it when the client did not ask for usage). An error event raises.
    """

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.done = False  # message_stop seen: the stream ended as it should
        self._head: JSON = {
            "id": _chat_id(None),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._tool_of_block: dict[int, int] = {}
        self._usage: JSON = {}

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> JSON:
        return {
            **self._head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def feed(self, event: JSON) -> list[JSON]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._head["id"] = _chat_id(message.get("id"))
            self._head["model"] = self.model or message.get("model")
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                k = len(self._tool_of_block)
                self._tool_of_block[int(event.get("index", 0))] = k
                call = {
                    "index": k,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            return self._delta(int(event.get("index", 0)), event.get("delta") or {})
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, FINISH_REASONS.get(stop or "", "stop"))]
        if kind == "message_stop":
            self.done = True
            return [{**self._head, "choices": [], "usage": _chat_usage(self._usage)}]
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamError(f"the backend reported an error mid-stream: {error.get('message', 'unknown')}")
        return []  # ping, and event types this gateway does not know

    def _delta(self, index: int, delta: JSON) -> list[JSON]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "input_json_delta" and index in self._tool_of_block:
            fragment = delta.get("partial_json", "")
            if not fragment:
                return []
            call = {"index": self._tool_of_block[index], "function": {"arguments": fragment}}
            return [self._chunk({"tool_calls": [call]})]
        return []
