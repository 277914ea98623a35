"""The sim as an Anthropic Messages server: `POST /v1/messages` (plain and streamed, tool use
included) and `POST /v1/messages/count_tokens`, with the same latency plans and faults as chat.

Messages shapes are written here on their own (the sim shares no code with the gateway): errors
as `{"type": "error", "error": {...}}`, streams as named events, message_start to message_stop.
"""

from __future__ import annotations

from typing import Any

import orjson

from sim import serving
from sim.exchange import Exchange
from sim.plan import Chunk, plan_request
from sim.state import SimState
from sim.tools import choose_tool, split_arguments, tool_arguments
from sim.vocab import output_tokens, seed_of

__all__ = ["count_tokens", "error_body", "messages"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def error_body(status: int, message: str) -> bytes:
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _event(payload: dict[str, Any]) -> bytes:
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _text(content: Any) -> str:
    """A message's or a tool result's text: a string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if isinstance(block, dict):
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif block.get("type") == "tool_result":
                parts.append(_text(block.get("content")))
    return " ".join(parts)


def _check(state: SimState, body: dict[str, Any], *, needs_max_tokens: bool) -> str:
    model = serving.check_model(state, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise serving.BadRequest(400, "messages: at least one message is required", "messages")
    if needs_max_tokens:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise serving.BadRequest(400, "max_tokens: Field required", "max_tokens")
    return model


def _prompt_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    total = len(_text(system).split()) if system else 0
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            total += 3 + len(_text(m.get("content")).split())
    return total


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _tool(body: dict[str, Any], user_text: str, forced: str | None) -> dict[str, Any] | None:
    """The tool to call, in the chat shape `sim.tools` reads."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    as_chat = [
        {
            "type": "function",
            "function": {
                "name": t.get("name"),
                "description": t.get("description"),
                "parameters": t.get("input_schema"),
            },
        }
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        return None
    if kind == "tool" and forced is None:
        forced = choice.get("name")
    return choose_tool(as_chat, None, user_text, forced)


async def messages(state: SimState, ex: Exchange, body: dict[str, Any]) -> None:
    model = _check(state, body, needs_max_tokens=True)
    override = serving.sim_override(body)
    plan = plan_request(state.config, override, state.rng, max_tokens=body["max_tokens"])
    user_text = _last_user_text(body["messages"])
    choice = body.get("tool_choice")
    must_call = isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    tool = _tool(body, user_text, plan.tool) if plan.call_tool or must_call else None
    if await serving.before_first_byte(state, ex, plan, error_body):
        return
    rid = "msg_" + state.next_id("sim").split("-", 1)[1]
    prompt = _prompt_tokens(body)
    head: dict[str, Any] = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    stream = body.get("stream") is True

    if tool is not None:
        name = tool["function"]["name"]
        call_id = "toolu_" + state.next_id("sim").split("-", 1)[1]
        arguments = tool_arguments(tool, user_text)
        fragments = split_arguments(arguments, max(plan.output_tokens - 1, 1))
        units = 1 + len(fragments)
        if not stream:
            await ex.sleep_until(plan.ttft_s + sum(plan.itls_s[: units - 1]))
            block = {"type": "tool_use", "id": call_id, "name": name, "input": orjson.loads(arguments)}
            payload = {
                **head,
                "content": [block],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": prompt, "output_tokens": units},
            }
            await serving.finish_plain(state, ex, plan, orjson.dumps(payload))
            return
        schedule = plan.schedule(units)
        events, u = [], 0
        for chunk in schedule:
            parts = []
            if u == 0:
                parts.append(_start(head, prompt))
                start = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                parts.append(_event({"type": "content_block_start", "index": 0, "content_block": start}))
            frag = "".join(fragments[max(u - 1, 0) : u + chunk.tokens - 1])
            if frag:
                delta = {"type": "input_json_delta", "partial_json": frag}
                parts.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
            events.append(b"".join(parts))
            u += chunk.tokens
        await serving.play(ex, plan, events, schedule, _end("tool_use", units))
        return

    n = plan.output_tokens
    seed = seed_of(user_text or model)
    stop_reason = _STOP_REASONS.get(plan.finish_reason, "end_turn")
    if not stream:
        await ex.sleep_until(plan.duration_s)
        text = "".join(output_tokens(seed, 0, n))
        payload = {
            **head,
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": stop_reason,
            "usage": {"input_tokens": prompt, "output_tokens": n},
        }
        await serving.finish_plain(state, ex, plan, orjson.dumps(payload))
        return
    schedule = plan.schedule()
    events, t = [], 0
    for chunk in schedule:
        delta = {"type": "text_delta", "text": "".join(output_tokens(seed, t, chunk.tokens))}
        piece = _event({"type": "content_block_delta", "index": 0, "delta": delta})
        if t == 0:
            opening = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            piece = _start(head, prompt) + _event(opening) + piece
        events.append(piece)
        t += chunk.tokens
    if not events:  # nothing to say: the message still opens and closes
        events, schedule = [_start(head, prompt)], [Chunk(plan.ttft_s, 0)]
        await serving.play(ex, plan, events, schedule, _end(stop_reason, 0, block_open=False))
        return
    await serving.play(ex, plan, events, schedule, _end(stop_reason, n))


def _start(head: dict[str, Any], prompt: int) -> bytes:
    message = {**head, "usage": {"input_tokens": prompt, "output_tokens": 1}}
    return _event({"type": "message_start", "message": message}) + _event({"type": "ping"})


def _end(stop_reason: str, output: int, *, block_open: bool = True) -> bytes:
    stop = _event({"type": "content_block_stop", "index": 0}) if block_open else b""
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output},
    }
    return stop + _event(delta) + _event({"type": "message_stop"})


async def count_tokens(state: SimState, ex: Exchange, body: dict[str, Any]) -> None:
    _check(state, body, needs_max_tokens=False)
    tools = body.get("tools")
    extra = len(orjson.dumps(tools).split()) if isinstance(tools, list) and tools else 0
    await ex.respond(200, orjson.dumps({"input_tokens": _prompt_tokens(body) + extra}))
