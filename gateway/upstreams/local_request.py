"""OpenAI request bodies → the built-in engine's request: sampling, structured output, tools.

Everything the engine honours is mapped; whatever it cannot honour is a 400 naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batching import SamplingParams
from batching.grammar import json_grammar
from batching.tool_calls import calls_grammar
from gateway.errors import BadRequest
from gateway.types import JSON

__all__ = ["EnginePlan", "ToolMode", "check_supported", "plan_request", "sampling_from"]

# Fields that change nothing here (or only say what we do anyway) are accepted and ignored.
_ACCEPTED = {
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stop_token_ids",
    "n",
    "ignore_eos",
    "best_of",
    "echo",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "response_format",
    "tool_choice",
    "tools",
    "logit_bias",
    "suffix",
    "min_tokens",
    "return_tokens_as_token_ids",
}
# What those fields may say without asking for something the engine cannot do.
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "echo": (None, False),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "min_tokens": (None, 0),
}

ToolMode = str  # "none" (no tools offered), "auto" (parse what the model writes), "forced" (grammar)


@dataclass(frozen=True, slots=True)
class EnginePlan:
    """What the transport asks of the engine for one call, and how to read the answer back."""

    sampling: SamplingParams
    grammar: str | None
    tools: list[JSON]  # offered to the model (empty with tool_choice "none")
    tool_mode: ToolMode
    logprobs: bool
    top_logprobs: int


def check_supported(body: JSON) -> None:
    for key, value in body.items():
        if key not in _ACCEPTED:
            raise BadRequest(f"The local engine does not support the parameter '{key}'.", param=key)
        allowed = _HARMLESS.get(key)
        if allowed is not None and value not in allowed:
            raise BadRequest(f"The local engine does not support '{key}' = {value!r}.", param=key)
    best_of = body.get("best_of")
    if best_of is not None and best_of != (body.get("n") or 1):
        raise BadRequest("The local engine does not support best_of other than n.", param="best_of")


def _number(body: JSON, key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"'{key}' must be a number.", param=key)
    return float(value)


def sampling_from(body: JSON, room: int, chat: bool = True) -> SamplingParams:
    """OpenAI sampling fields → the engine's, with OpenAI's defaults: without `max_tokens` the
    answer may run to the end of the context (`room` tokens after the prompt)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    stop = body.get("stop") or ()
    logprobs, top = _logprobs(body, chat)
    stop_ids = body.get("stop_token_ids") or ()
    if not isinstance(stop_ids, list | tuple):
        raise BadRequest("'stop_token_ids' must be a list of token ids.", param="stop_token_ids")
    return SamplingParams(
        temperature=_number(body, "temperature", 1.0),
        top_p=_number(body, "top_p", 1.0),
        top_k=int(body.get("top_k") or 0),
        seed=body.get("seed"),
        max_tokens=int(max_tokens) if max_tokens else max(1, room),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        stop_token_ids=tuple(stop_ids),
        ignore_eos=bool(body.get("ignore_eos", False)),
        presence_penalty=_number(body, "presence_penalty", 0.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0),
        logprobs=logprobs,
        top_logprobs=top,
        n=int(body.get("n") or 1),
    )


def _logprobs(body: JSON, chat: bool) -> tuple[bool, int]:
    value = body.get("logprobs")
    if chat:
        if value is not None and not isinstance(value, bool):
            raise BadRequest("'logprobs' must be true or false.", param="logprobs")
        top = body.get("top_logprobs") or 0
        if top and not value:
            raise BadRequest("'top_logprobs' needs 'logprobs' to be true.", param="top_logprobs")
        return bool(value), int(top)
    # Legacy completions: `logprobs` is the number of alternatives (0 still reports the chosen token).
    if value is None or value is False:
        return False, 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise BadRequest("'logprobs' must be an integer from 0 to 5.", param="logprobs")
    return True, value


def plan_request(body: JSON, room: int, chat: bool) -> EnginePlan:
    sampling = sampling_from(body, room, chat)
    tools, mode, tool_grammar = _tools(body) if chat else ([], "none", None)
    grammar = _response_format(body.get("response_format"))
    if grammar is not None and tool_grammar is not None:
        raise BadRequest("response_format cannot be combined with a forced tool_choice.", param="response_format")
    return EnginePlan(sampling, grammar or tool_grammar, tools, mode, sampling.logprobs, sampling.top_logprobs)


def _response_format(fmt: Any) -> str | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("'response_format' must be an object with a 'type'.", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_grammar(None)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise BadRequest(
                "response_format json_schema needs 'json_schema': {'name', 'schema'}.", param="response_format"
            )
        return json_grammar(spec.get("schema") or {"type": "object"}, strict=bool(spec.get("strict")))
    raise BadRequest(f"The local engine does not support response_format type {kind!r}.", param="response_format")


def _tools(body: JSON) -> tuple[list[JSON], ToolMode, str | None]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise BadRequest("'tool_choice' needs 'tools'.", param="tool_choice")
        return [], "none", None
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or "function" not in tool:
            raise BadRequest("The local engine supports tools of type 'function' only.", param="tools")
    if choice in (None, "auto"):
        return tools, "auto", None
    if choice == "none":
        return [], "none", None
    single = body.get("parallel_tool_calls") is False
    if choice == "required":
        return tools, "forced", calls_grammar(tools, single=single)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in {t["function"].get("name") for t in tools}:
            raise BadRequest(f"tool_choice names {name!r}, which is not among the tools.", param="tool_choice")
        return tools, "forced", calls_grammar(tools, only=name)
    raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or a named function.", param="tool_choice")
