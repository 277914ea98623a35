"""The generating endpoints: chat completions, completions and embeddings, faults included.

Each handler validates just enough, asks `plan_request` what to do, and plays the plan out on the
`Exchange`: injected errors and hangs before the first byte, then either one JSON body when the
generation would be over, or SSE chunks at their scheduled times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from sim import wire
from sim.config import SimOverride
from sim.embeddings import embed, embedding_inputs
from sim.exchange import Exchange
from sim.plan import Chunk, Plan, plan_request
from sim.state import SimState
from sim.tools import choose_tool, split_arguments, tool_arguments, tool_name
from sim.vocab import count_prompt_tokens, message_text, output_tokens, seed_of

__all__ = [
    "BadRequest",
    "before_first_byte",
    "chat_completions",
    "check_model",
    "completions",
    "embeddings",
    "finish_plain",
    "play",
    "sim_override",
]

_ERROR_TYPES = {
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("overloaded_error", "overloaded"),
    504: ("timeout_error", None),
}


class BadRequest(Exception):
    """A request the sim refuses, rendered in the OpenAI error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def check_model(state: SimState, body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(400, "you must provide a model parameter", "model")
    if model not in state.config.models:
        served = ", ".join(state.config.models)
        raise BadRequest(404, f"The model `{model}` does not exist (served: {served})", "model", "model_not_found")
    return model


def sim_override(body: dict[str, Any]) -> SimOverride | None:
    raw = body.get("sim")
    if raw is None:
        return None
    try:
        return SimOverride.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(400, f"invalid sim override: {exc.errors()[0]['msg']}", "sim") from None


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


async def before_first_byte(
    state: SimState, ex: Exchange, plan: Plan, error_body: Callable[[int, str], bytes] | None = None
) -> bool:
    """Play an injected error or hang; True when the response has been given already. `error_body`
    renders the error in another API's shape (status, message) than OpenAI's."""
    if plan.fault is None or plan.fault == "slow":
        if plan.fault == "slow":
            state.stats.errors_injected["slow"] += 1
        return False
    state.stats.errors_injected[plan.fault] += 1
    if plan.fault == "error":
        type_, code = _ERROR_TYPES.get(plan.status, ("invalid_request_error", None))
        headers = [(b"retry-after", b"%g" % plan.retry_after_s)] if plan.retry_after_s is not None else []
        message = f"injected fault: status {plan.status}"
        body = error_body(plan.status, message) if error_body else wire.error_body(message, type_, code)
        await ex.respond(plan.status, body, headers)
        return True
    if plan.fault == "hang":
        await ex.sleep_until(plan.hang_s)
        ex.t0 = time.perf_counter()  # after a hang that ran out, generate as if the request just came
    return False


def _groups(schedule: list[Chunk]) -> Iterable[tuple[float, int, int]]:
    """(time, first chunk index, chunk count) for chunks that leave together."""
    i = 0
    while i < len(schedule):
        j = i + 1
        while j < len(schedule) and schedule[j].at_s == schedule[i].at_s:
            j += 1
        yield schedule[i].at_s, i, j - i
        i = j


async def play(ex: Exchange, plan: Plan, events: list[bytes], schedule: list[Chunk], tail: bytes) -> None:
    """Send `events[i]` at `schedule[i]`, with the faults that strike mid-stream, then `tail`."""
    await ex.start_stream()
    fault, after = plan.fault, plan.after_chunks
    for at_s, first, count in _groups(schedule):
        await ex.sleep_until(at_s)
        out: list[bytes] = []
        for i in range(first, first + count):
            if fault == "disconnect" and i == after:
                if out:
                    await ex.write(b"".join(out), len(out))
                ex.abandon()
                return
            event = events[i]
            if i == after and fault == "malformed_json":
                event = event[: len(event) // 2] + b"\n\n"
            elif i == after and fault == "malformed_sse":
                event = event[:-1]  # no blank line: this data line runs into the next event
            out.append(event)
        await ex.write(b"".join(out), count)
    if fault == "disconnect":  # asked to drop after more chunks than there were
        ex.abandon()
        return
    await ex.end(tail)


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return message_text(m.get("content"))
    return ""


async def chat_completions(state: SimState, ex: Exchange, body: dict[str, Any]) -> None:
    model = check_model(state, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "messages must be a non-empty array", "messages")
    override = sim_override(body)
    plan = plan_request(state.config, override, state.rng, max_tokens=_max_tokens(body))
    user_text = _last_user_text(messages)
    tools = body.get("tools")
    tool = None
    # A tool's result as the last turn is answered in words, as a model would, unless a call is forced.
    answered = isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    free = body.get("tool_choice") in (None, "auto")
    if isinstance(tools, list) and tools and plan.call_tool and not (answered and free):
        tool = choose_tool(tools, body.get("tool_choice"), user_text, plan.tool)
    if await before_first_byte(state, ex, plan):
        return
    rid = state.next_id("chatcmpl")
    created = int(time.time())
    prompt = count_prompt_tokens(messages)
    seed = seed_of(user_text or model)
    stream = body.get("stream") is True
    opts = body.get("stream_options")
    include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True

    if tool is not None:
        name = tool_name(tool) or ""
        call_id = "call_" + state.next_id("sim").split("-", 1)[1]
        arguments = tool_arguments(tool, user_text)
        fragments = split_arguments(arguments, max(plan.output_tokens - 1, 1))
        units = 1 + len(fragments)
        if not stream:
            await ex.sleep_until(plan.ttft_s + sum(plan.itls_s[: units - 1]))
            payload = wire.chat_response(
                rid, created, model, None, "tool_calls", prompt, units, (call_id, name, arguments)
            )
            await finish_plain(state, ex, plan, payload)
            return
        cs = wire.ChatStream(rid, created, model, include_usage)
        schedule = plan.schedule(units)
        events, u = [], 0
        for chunk in schedule:
            parts = []
            if u == 0:
                parts.append(cs.tool_head(call_id, name))
            frag = "".join(fragments[max(u - 1, 0) : u + chunk.tokens - 1])
            if frag:
                parts.append(cs.tool_arguments(frag))
            events.append(b"".join(parts))
            u += chunk.tokens
        tail = cs.finish("tool_calls") + (cs.usage(prompt, units) if include_usage else b"") + wire.DONE
        await play(ex, plan, events, schedule, tail)
        return

    n = plan.output_tokens
    if not stream:
        await ex.sleep_until(plan.duration_s)
        text = "".join(output_tokens(seed, 0, n))
        await finish_plain(
            state, ex, plan, wire.chat_response(rid, created, model, text, plan.finish_reason, prompt, n)
        )
        return
    cs = wire.ChatStream(rid, created, model, include_usage)
    schedule = plan.schedule()
    events, t = [], 0
    for chunk in schedule:
        piece = cs.content("".join(output_tokens(seed, t, chunk.tokens)))
        events.append(cs.role() + piece if t == 0 else piece)
        t += chunk.tokens
    if not events:  # nothing to say (max_tokens 0): the role chunk alone opens the stream
        events, schedule = [cs.role()], [Chunk(plan.ttft_s, 0)]
    tail = cs.finish(plan.finish_reason) + (cs.usage(prompt, n) if include_usage else b"") + wire.DONE
    await play(ex, plan, events, schedule, tail)


async def finish_plain(state: SimState, ex: Exchange, plan: Plan, payload: bytes) -> None:
    if plan.fault == "disconnect":
        await ex.respond_partial(payload)
        ex.abandon()
        return
    if plan.fault in ("malformed_json", "malformed_sse"):
        payload = payload[: len(payload) // 2]
    await ex.respond(200, payload)


async def completions(state: SimState, ex: Exchange, body: dict[str, Any]) -> None:
    model = check_model(state, body)
    prompt_raw = body.get("prompt")
    if isinstance(prompt_raw, list):
        prompt_text = " ".join(
            p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list) else str(p) for p in prompt_raw
        )
    elif isinstance(prompt_raw, str):
        prompt_text = prompt_raw
    else:
        raise BadRequest(400, "prompt must be a string or an array", "prompt")
    plan = plan_request(state.config, sim_override(body), state.rng, max_tokens=_max_tokens(body))
    if await before_first_byte(state, ex, plan):
        return
    rid = state.next_id("cmpl")
    created = int(time.time())
    prompt = len(prompt_text.split())
    seed = seed_of(prompt_text or model)
    n = plan.output_tokens
    if body.get("stream") is not True:
        await ex.sleep_until(plan.duration_s)
        text = "".join(output_tokens(seed, 0, n))
        await finish_plain(
            state,
            ex,
            plan,
            wire.completion_response(rid, created, model, text, plan.finish_reason, prompt, n),
        )
        return
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    cs = wire.CompletionStream(rid, created, model, include_usage)
    schedule = plan.schedule()
    events, t = [], 0
    for chunk in schedule:
        events.append(cs.content("".join(output_tokens(seed, t, chunk.tokens))))
        t += chunk.tokens
    tail = cs.finish(plan.finish_reason) + (cs.usage(prompt, n) if include_usage else b"") + wire.DONE
    await play(ex, plan, events, schedule, tail)


async def embeddings(state: SimState, ex: Exchange, body: dict[str, Any]) -> None:
    model = check_model(state, body)
    inputs = embedding_inputs(body.get("input"))
    if inputs is None:
        raise BadRequest(400, "input must be a string, an array of strings or an array of token arrays", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest(400, "encoding_format must be 'float' or 'base64'", "encoding_format")
    dim = body.get("dimensions", state.config.embedding_dim)
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 8192:
        raise BadRequest(400, "dimensions must be an integer between 1 and 8192", "dimensions")
    plan = plan_request(state.config, sim_override(body), state.rng, max_tokens=None)
    if await before_first_byte(state, ex, plan):
        return
    await ex.sleep_until(plan.ttft_s)
    tokens = sum(len(t.split()) for t in inputs)
    payload = orjson.dumps(
        {
            "object": "list",
            "data": [wire.embedding_item(i, embed(text, dim), encoding) for i, text in enumerate(inputs)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    await finish_plain(state, ex, plan, payload)
