"""Tool calling through the model's own markup: tools into the prompt, calls out of the text.

SmolLM2's chat template has no tool section. Its family (the SmolLM2 instruct models' function-calling
format, the same markup as Hermes and Qwen templates) lists the tools as JSON inside `<tools>` in the
system prompt and answers with `<tool_call>[{"name": ..., "arguments": {...}}, ...]</tool_call>`; a
template that does take `tools` renders them itself. Either way calls are read back from that markup:
`ToolCallParser` turns streamed text into content and tool-call events, a call's name as soon as it
is known and its arguments as they are generated. `tool_choice` "required" or a named function is
enforced with a grammar (`calls_grammar`), so the call always parses and its arguments validate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batching.grammar import lark_grammar, schema_lark

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "ToolCallEvent",
    "ToolCallParser",
    "calls_grammar",
    "tools_system_prompt",
]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_SEPARATOR = re.compile(r"\s*(,|\])")


def tools_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system prompt section that offers `tools` (OpenAI's `{"type": "function", "function": ...}`)."""
    functions = [dict(t.get("function", t)) for t in tools]
    return (
        "You can call functions to answer. These are the functions you may call, as JSON:\n"
        f"<tools>{json.dumps(functions)}</tools>\n\n"
        "To call functions, answer with nothing but the calls, as a JSON list in this form:\n"
        f'{CALL_OPEN}[{{"name": "function_name", "arguments": {{"parameter": "value"}}}}]{CALL_CLOSE}\n'
        "Give every required parameter a value of the right type. When no function fits, answer in words."
    )


def calls_grammar(tools: Sequence[Mapping[str, Any]], only: str | None = None, single: bool = False) -> str:
    """A grammar for one `<tool_call>` block of at least one call to `tools` (just one call when
    `single`; one call to the function named `only`, when given), each call's arguments valid against
    its parameters schema."""
    variants = []
    for tool in tools:
        function = tool.get("function", tool)
        if only is not None and function["name"] != only:
            continue
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        variants.append({
            "type": "object",
            "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    calls: dict[str, Any] = {"type": "array", "items": {"anyOf": variants}, "minItems": 1}
    if only is not None or single:
        calls["maxItems"] = 1
    lark = f"start: {json.dumps(CALL_OPEN)} calls {json.dumps(CALL_CLOSE)}\ncalls: {schema_lark(calls)}\n"
    return lark_grammar(lark, "tools")


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """`kind` "content": `text` is plain content; "call": call `index` begins, `text` is its name;
    "arguments": `text` continues call `index`'s arguments (a JSON text once all fragments are joined)."""

    kind: str
    text: str
    index: int = 0


class ToolCallParser:
    """Incremental: `feed` text as it streams, then `finish`. Text that is not well-formed call markup
    is given back as content, never dropped."""

    def __init__(self) -> None:
        self._pending = ""  # content that may be the start of CALL_OPEN, or the markup being read
        self._inside = False
        self._calls = 0
        self._current: int | None = None  # the call whose arguments are streaming
        self._args_scan = _ValueScanner()
        self._raw = ""  # the markup of the current block, for giving it back when it turns out malformed
        self._expect_list = False  # just after CALL_OPEN: a "[" may open the list of calls
        self._closing_brace = False  # after a call's arguments: its object's "}" comes next

    @property
    def num_calls(self) -> int:
        return self._calls

    def feed(self, text: str) -> list[ToolCallEvent]:
        self._pending += text
        self._raw += text if self._inside else ""
        events: list[ToolCallEvent] = []
        while True:
            if not self._inside:
                start = self._pending.find(CALL_OPEN)
                if start < 0:
                    keep = _partial_suffix(self._pending, CALL_OPEN)
                    self._emit_content(events, self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep:]
                    return events
                self._emit_content(events, self._pending[:start])
                self._pending = self._pending[start + len(CALL_OPEN):]
                self._raw = CALL_OPEN + self._pending
                self._inside = True
                self._expect_list = True
                continue
            if not self._step(events):
                return events

    def finish(self) -> list[ToolCallEvent]:
        """What is left at the end: an unfinished block is content again (minus calls already sent)."""
        events: list[ToolCallEvent] = []
        if self._inside and self._current is None and self._pending.strip() and not self._calls:
            self._emit_content(events, self._raw)
        elif not self._inside:
            self._emit_content(events, self._pending)
        self._pending, self._raw, self._inside = "", "", False
        return events

    # -- inside a <tool_call> block ----------------------------------------------------------------

    def _step(self, events: list[ToolCallEvent]) -> bool:
        """Advance through the block as far as the text allows; False when more text is needed."""
        text = self._pending
        if self._current is not None:  # streaming a call's arguments
            if not self._args_scan.started:
                text = self._pending = text.lstrip()
                if not text:
                    return False
            end = self._args_scan.feed(text)
            if end is None:
                if text:
                    events.append(ToolCallEvent("arguments", text, self._current))
                self._pending = ""
                return False
            if end:
                events.append(ToolCallEvent("arguments", text[:end], self._current))
            self._pending = text[end:]
            self._current = None
            self._closing_brace = True
            return True
        if self._closing_brace:
            stripped = text.lstrip()
            if not stripped:
                return False
            if stripped[0] != "}":
                return self._malformed(events)
            self._pending = stripped[1:]
            self._closing_brace = False
            return True
        if self._expect_list:
            stripped = text.lstrip()
            if not stripped:
                return False
            if stripped[0] == "[":
                self._pending = stripped[1:]
            self._expect_list = False
            return True
        stripped = text.lstrip()
        if stripped.startswith(CALL_CLOSE):
            self._pending = stripped[len(CALL_CLOSE):]
            self._inside = False
            return True
        if not stripped or (CALL_CLOSE.startswith(stripped) and stripped.startswith("<")):
            return False
        if stripped[0] in ",]":
            self._pending = stripped[1:]
            return True
        head = _CALL_HEAD.match(text)
        if head is not None:
            name = json.loads(f'"{head.group(1)}"')
            self._current = self._calls
            self._calls += 1
            events.append(ToolCallEvent("call", name, self._current))
            self._args_scan = _ValueScanner()
            self._pending = text[head.end():]
            return True
        if stripped.startswith("{"):
            if len(stripped) < 64 and _could_be_head(stripped):
                return False  # the call's head is still arriving
            try:  # keys in another order: wait for the whole object
                value, end = json.JSONDecoder().raw_decode(stripped)
            except json.JSONDecodeError:
                return False
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                return self._malformed(events)
            index = self._calls
            self._calls += 1
            events.append(ToolCallEvent("call", value["name"], index))
            events.append(ToolCallEvent("arguments", json.dumps(value.get("arguments", {})), index))
            self._pending = stripped[end:]
            return True
        return self._malformed(events)

    def _malformed(self, events: list[ToolCallEvent]) -> bool:
        # Not call markup after all: what was held back is content, and parsing starts over after it.
        if not self._calls:
            self._emit_content(events, self._raw)
        self._pending, self._raw, self._inside = "", "", False
        self._current = None
        self._closing_brace = False
        return False

    @staticmethod
    def _emit_content(events: list[ToolCallEvent], text: str) -> None:
        if text:
            events.append(ToolCallEvent("content", text))


class _ValueScanner:
    """Finds where one JSON value ends in text fed piece by piece (strings, escapes, nesting)."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def feed(self, text: str) -> int | None:
        """The offset in `text` just after the value's end, or None when it goes on."""
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._depth == 0:
                        return i + 1
                continue
            if ch.isspace() and not self._started:
                continue
            self._started = True
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth <= 0:
                    return i + 1 if self._depth == 0 else i
            elif self._depth == 0 and ch in ",":
                return i  # a bare number, true, false or null ended
        return None


def _could_be_head(text: str) -> bool:
    probe = '{"name": "'
    compact = re.sub(r"\s+", "", text)
    return probe.replace(" ", "").startswith(compact) or compact.startswith(probe.replace(" ", ""))


def _partial_suffix(text: str, marker: str) -> int:
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
