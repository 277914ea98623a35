"""Responses API ⇄ chat completions, as pure functions (for backends that do not speak Responses).

    request_to_chat(body)              a Responses request → a chat completions body
    response_from_chat(chat, request)  a chat.completion → a Responses `response` object
    ChatToResponsesStream(request)     chat.completion.chunk events → Responses stream events

What chat completions cannot express is refused with a 400 naming the field, never dropped.
Reasoning items in the input are the model's own earlier thoughts: chat completions takes none
back, so they are left out of the chat conversation (as chat templates leave them out).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from gateway.dialect import ChatStreamTranslation
from gateway.errors import BadRequest
from gateway.types import JSON

__all__ = [
    "ChatToResponsesStream",
    "ResponsesTranslation",
    "chat_from_response",
    "input_items",
    "new_id",
    "request_to_chat",
    "response_from_chat",
    "response_skeleton",
]

# Fields the gateway itself honours (state, bookkeeping) or that say what translation does anyway.
_GATEWAY_FIELDS = {
    "model", "input", "instructions", "stream", "store", "previous_response_id", "metadata", "user",
    "service_tier", "background", "include", "truncation", "safety_identifier", "prompt_cache_key",
    "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning", "max_output_tokens",
    "temperature", "top_p", "top_logprobs", "stream_options",
}  # fmt: skip
# What those fields may say without asking for something chat completions cannot do.
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "background": (None, False),
    "truncation": (None, "disabled", "auto"),
}
_TEXT_PARTS = {"input_text", "output_text", "text"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def input_items(body: JSON) -> list[JSON]:
    """The request's input as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or ())


# -- request ------------------------------------------------------------------------------------


def request_to_chat(body: JSON) -> JSON:
    for key, value in body.items():
        if key not in _GATEWAY_FIELDS:
            raise BadRequest(f"'{key}' cannot be honoured when translating Responses to chat completions.", param=key)
        allowed = _HARMLESS.get(key)
        if allowed is not None and value not in allowed:
            raise BadRequest(f"'{key}' = {value!r} cannot be honoured by this backend.", param=key)
    messages: list[JSON] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages.extend(_messages(input_items(body)))
    if not messages:
        raise BadRequest("'input' holds nothing a chat model can read.", param="input")
    chat: JSON = {"model": body["model"], "messages": messages}
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    if body.get("tools"):
        chat["tools"] = [_tool(t, i) for i, t in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{where}' must be a string or a list of content parts.", param=where)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise BadRequest(f"Content part type {kind!r} cannot be translated here.", param=f"{where}[{i}]")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def _user_content(content: Any, where: str) -> Any:
    """User content: text, or parts with images (chat completions takes image_url parts)."""
    if isinstance(content, str) or not isinstance(content, list):
        return _text_of(content, where)
    if all(isinstance(p, dict) and p.get("type") in _TEXT_PARTS for p in content):
        return _text_of(content, where)
    parts: list[JSON] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: JSON = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise BadRequest(f"Content part type {kind!r} cannot be translated here.", param=f"{where}[{i}]")
    return parts


def _messages(items: list[JSON]) -> list[JSON]:
    messages: list[JSON] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest("Each input item must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"Unknown role {role!r}.", param=f"{where}.role")
            if role == "user":
                content = _user_content(item.get("content"), f"{where}.content")
            else:
                content = _text_of(item.get("content"), f"{where}.content")
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call_id, name = item.get("call_id") or item.get("id"), item.get("name")
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": item.get("arguments") or ""},
            }
            if not call_id or not name:
                raise BadRequest("A function_call item needs 'call_id' and 'name'.", param=where)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]  # the text the model wrote before calling
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise BadRequest("A function_call_output item needs 'call_id'.", param=f"{where}.call_id")
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise BadRequest(f"Input items of type {kind!r} cannot be translated to chat completions.", param=where)
    return messages


def _tool(tool: Any, i: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(f"Tools of type {kind!r} cannot be translated; only 'function' tools.", param=f"tools[{i}]")
    if not tool.get("name"):
        raise BadRequest("A function tool needs a 'name'.", param=f"tools[{i}].name")
    fn: JSON = {"name": tool["name"]}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest("'tool_choice' must be 'auto', 'none', 'required' or a named function.", param="tool_choice")


def _response_format(text: Any) -> JSON | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BadRequest("'text' must be an object.", param="text")
    for key, value in text.items():
        if key != "format" and value is not None and not (key == "verbosity" and value == "medium"):
            raise BadRequest(f"'text.{key}' cannot be honoured by this backend.", param=f"text.{key}")
    fmt = text.get("format")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise BadRequest("text.format json_schema needs a 'schema' object.", param="text.format.schema")
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        spec.setdefault("name", "response")
        return {"type": "json_schema", "json_schema": spec}
    raise BadRequest(f"text.format type {fmt.get('type')!r} is not supported.", param="text.format.type")


# -- response -----------------------------------------------------------------------------------


def response_skeleton(request: JSON, *, response_id: str, created: int, model: str) -> JSON:
    """A `response` object echoing the request's settings, with no output yet (status in_progress)."""
    text = request.get("text") or {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning"),
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": text,
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation", "disabled"),
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _usage(chat_usage: JSON | None) -> JSON | None:
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = int((chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def _finish(response: JSON, finish_reason: str | None, usage: JSON | None) -> JSON:
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    response["usage"] = _usage(usage)
    return response


def _message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _reasoning_item(item_id: str, text: str) -> JSON:
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_from_chat(chat: JSON, request: JSON) -> JSON:
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    response = response_skeleton(
        request,
        response_id=new_id("resp"),
        created=int(chat.get("created") or time.time()),
        model=str(chat.get("model") or request.get("model")),
    )
    output = response["output"]
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        output.append(_reasoning_item(new_id("rs"), reasoning))
    if message.get("content"):
        output.append(_message_item(new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append(_call_item(new_id("fc"), call.get("id") or new_id("call"), fn.get("name", ""),
                                 fn.get("arguments") or ""))  # fmt: skip
    return _finish(response, choice.get("finish_reason"), chat.get("usage"))


def chat_from_response(response: JSON) -> JSON | None:
    """A whole `response` as the chat.completion it stands for (None: output chat cannot hold)."""
    text: list[str] = []
    calls: list[JSON] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") != "output_text":
                    return None  # a refusal, say
                text.append(str(part.get("text") or ""))
        elif kind == "function_call":
            fn = {"name": item.get("name"), "arguments": item.get("arguments") or ""}
            calls.append({"id": item.get("call_id"), "type": "function", "function": fn})
        elif kind != "reasoning":
            return None
    status = response.get("status")
    reason = (response.get("incomplete_details") or {}).get("reason")
    if calls:
        finish = "tool_calls"
    elif status == "completed":
        finish = "stop"
    elif status == "incomplete" and reason == "max_output_tokens":
        finish = "length"
    else:
        finish = None
    message: JSON = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    chat: JSON = {
        "id": response.get("id", ""),
        "object": "chat.completion",
        "created": response.get("created_at", 0),
        "model": response.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    usage = response.get("usage")
    if usage:
        chat["usage"] = {
            "prompt_tokens": usage.get("input_tokens", 0),
            "completion_tokens": usage.get("output_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
        }
    return chat


# -- stream -------------------------------------------------------------------------------------


class ChatToResponsesStream(ChatStreamTranslation):
    """Chat chunks in, Responses events out, each with its `sequence_number`.

    Output items open as their first delta arrives and close, in order, when the next kind of item
    starts or the stream ends: reasoning, then the message, then one item per tool call.
    """

    def __init__(self, request: JSON):
        super().__init__()
        self.request = request
        self.response: JSON | None = None
        self._seq = 0
        self._open: JSON | None = None  # the item being written: {"kind", "item", "index", "text"}
        self._calls: dict[int, JSON] = {}  # chat tool call index → its open state
        self._output: list[JSON] = []

    def _event(self, kind: str, **fields: Any) -> JSON:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _start(self, chunk: JSON, out: list[JSON]) -> None:
        self.response = response_skeleton(
            self.request,
            response_id=new_id("resp"),
            created=int(chunk.get("created") or time.time()),
            model=str(chunk.get("model") or self.request.get("model")),
        )
        out.append(self._event("response.created", response={**self.response, "output": []}))
        out.append(self._event("response.in_progress", response={**self.response, "output": []}))

    def _text(self, kind: Literal["reasoning", "content"], text: str, out: list[JSON]) -> None:
        if self._open is None or self._open["kind"] != kind:
            self._close_open(out)
            index = len(self._output)
            if kind == "content":
                item = _message_item(new_id("msg"), "", "in_progress")
                item["content"] = []
                part: JSON = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            else:
                item = _reasoning_item(new_id("rs"), "")
                item["content"] = []
                part = {"type": "reasoning_text", "text": ""}
            self._output.append(item)
            self._open = {"kind": kind, "item": item, "index": index, "text": []}
            out.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
            out.append(
                self._event(
                    "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
        state = self._open
        state["text"].append(text)
        where = {"item_id": state["item"]["id"], "output_index": state["index"], "content_index": 0}
        if kind == "content":
            out.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        else:
            out.append(self._event("response.reasoning_text.delta", **where, delta=text))

    def _close_open(self, out: list[JSON]) -> None:
        state, self._open = self._open, None
        if state is None:
            return
        item, index, text = state["item"], state["index"], "".join(state["text"])
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if state["kind"] == "content":
            part: JSON = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            done = self._event("response.output_text.done", **where, text=text, logprobs=[])
        else:
            part = {"type": "reasoning_text", "text": text}
            done = self._event("response.reasoning_text.done", **where, text=text)
        item["content"] = [part]
        if "status" in item:
            item["status"] = "completed"
        out.append(done)
        out.append(self._event("response.content_part.done", **where, part=part))
        out.append(self._event("response.output_item.done", output_index=index, item=item))

    def _tool_call(self, call: JSON, out: list[JSON]) -> None:
        slot = int(call.get("index", 0))
        fn = call.get("function") or {}
        state = self._calls.get(slot)
        if state is None:
            self._close_open(out)
            self._close_calls(out)
            item = _call_item(new_id("fc"), call.get("id") or new_id("call"), fn.get("name") or "", "", "in_progress")
            state = {"item": item, "index": len(self._output), "arguments": []}
            self._output.append(item)
            self._calls[slot] = state
            out.append(self._event("response.output_item.added", output_index=state["index"], item=dict(item)))
        elif fn.get("name"):
            state["item"]["name"] += fn["name"]
        if fn.get("arguments"):
            state["arguments"].append(fn["arguments"])
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=state["item"]["id"],
                    output_index=state["index"],
                    delta=fn["arguments"],
                )
            )

    def _close_calls(self, out: list[JSON]) -> None:
        for state in self._calls.values():
            item = state["item"]
            if item["status"] == "completed":
                continue
            item["arguments"] = "".join(state["arguments"])
            item["status"] = "completed"
            where = {"item_id": item["id"], "output_index": state["index"]}
            out.append(
                self._event(
                    "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"]
                )
            )
            out.append(self._event("response.output_item.done", output_index=state["index"], item=item))

    def _finished(self, out: list[JSON]) -> None:
        pass  # the items close in `_end`, with the response's final status

    def _end(self, out: list[JSON]) -> None:
        self._close_open(out)
        self._close_calls(out)
        assert self.response is not None
        response = _finish({**self.response, "output": self._output}, self.finish_reason, self.usage)
        # `response.completed` even when the status is incomplete (as vLLM does): the SDKs' stream
        # helpers and the Agents SDK wait for that event alone.
        out.append(self._event("response.completed", response=response))


class ResponsesTranslation:
    """The `Translation` of the Responses API (gateway/dialect.py)."""

    def request(self, body: JSON) -> JSON:
        return request_to_chat(body)

    def response(self, chat: JSON, request: JSON) -> JSON:
        return response_from_chat(chat, request)

    def stream(self, request: JSON) -> ChatToResponsesStream:
        return ChatToResponsesStream(request)
