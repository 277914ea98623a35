"""Tool-call markup: the parser over text in any chunking, and the grammar that forces calls."""

from __future__ import annotations

import json

import llguidance
import pytest

from batching.tool_calls import ToolCallParser, calls_grammar, tools_system_prompt

# (case, model output, content given back, calls as (name, arguments))
OUTPUTS = [
    ("one call in a list", '<tool_call>[{"name": "f", "arguments": {"x": 1}}]</tool_call>', "", [("f", {"x": 1})]),
    ("two calls, text before", 'Sure. <tool_call>[{"name": "a", "arguments": {"s": "}]\\""}}, '
     '{"name": "b", "arguments": {}}]</tool_call>', "Sure. ", [("a", {"s": '}]"'}), ("b", {})]),
    ("a bare object, Hermes style", '<tool_call>\n{"name": "f", "arguments": {"q": [1, {"k": null}]}}\n</tool_call>',
     "", [("f", {"q": [1, {"k": None}]})]),
    ("keys in the other order", '<tool_call>[{"arguments": {"x": true}, "name": "g"}]</tool_call>', "",
     [("g", {"x": True})]),
    ("no markup", "Paris is the capital <of> France.", "Paris is the capital <of> France.", []),
    ("malformed markup is content", "<tool_call>[not json", "<tool_call>[not json", []),
    ("an unfinished opening tag is content", "I would <tool_ca", "I would <tool_ca", []),
]


@pytest.mark.parametrize(("case", "text", "content", "calls"), OUTPUTS, ids=[o[0] for o in OUTPUTS])
@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_the_parser_reads_calls_however_the_text_is_chunked(case: str, text: str, content: str,
                                                            calls: list[tuple[str, object]], piece: int) -> None:
    parser = ToolCallParser()
    events = []
    for i in range(0, len(text), piece):
        events += parser.feed(text[i:i + piece])
    events += parser.finish()
    assert "".join(e.text for e in events if e.kind == "content") == content, case
    found: dict[int, list[str]] = {}
    for e in events:
        if e.kind == "call":
            assert e.index == len(found)  # calls open in order, each once
            found[e.index] = [e.text, ""]
        elif e.kind == "arguments":
            found[e.index][1] += e.text
    assert [(name, json.loads(args)) for name, args in found.values()] == calls


def test_arguments_stream_in_pieces_as_they_are_generated() -> None:
    parser = ToolCallParser()
    text = '<tool_call>[{"name": "f", "arguments": {"city": "Paris", "days": 3}}]</tool_call>'
    kinds = [e.kind for i in range(0, len(text), 4) for e in parser.feed(text[i:i + 4])]
    assert kinds[0] == "call" and kinds.count("arguments") > 3


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "no_args"}},
]


def _accepts(grammar: str, text: str) -> bool:
    """Whether the grammar allows `text` as a whole answer (checked byte by byte, no tokenizer needed)."""
    tokenizer = llguidance.LLTokenizer(_BYTE_TOKENIZER)
    matcher = llguidance.LLMatcher(tokenizer, grammar)
    ok = matcher.consume_tokens([b + 3 for b in text.encode()])  # ids 3.. are the 256 bytes
    return ok and matcher.is_accepting()


ACCEPTED = [
    ("required: one call", None, '<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
     "</tool_call>", True),
    ("required: two calls", None, '<tool_call>[{"name": "no_args", "arguments": {}}, '
     '{"name": "get_weather", "arguments": {"city": "Rome"}}]</tool_call>', True),
    ("required: no call at all", None, "It is sunny.", False),
    ("required: an unknown function", None, '<tool_call>[{"name": "other", "arguments": {}}]</tool_call>', False),
    ("required: arguments off the schema", None, '<tool_call>[{"name": "get_weather", "arguments": {}}]</tool_call>',
     False),
    ("named: that function", "get_weather", '<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
     "</tool_call>", True),
    ("named: another function", "get_weather", '<tool_call>[{"name": "no_args", "arguments": {}}]</tool_call>', False),
    ("named: two calls", "no_args", '<tool_call>[{"name": "no_args", "arguments": {}}, '
     '{"name": "no_args", "arguments": {}}]</tool_call>', False),
]


@pytest.mark.parametrize(("case", "only", "text", "ok"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_the_grammar_forces_calls_that_validate(case: str, only: str | None, text: str, ok: bool) -> None:
    assert _accepts(calls_grammar(TOOLS, only=only), text) is ok, case


def test_the_system_prompt_lists_every_tool() -> None:
    prompt = tools_system_prompt(TOOLS)
    listed = json.loads(prompt.split("<tools>")[1].split("</tools>")[0])
    assert [f["name"] for f in listed] == ["get_weather", "no_args"] and "<tool_call>" in prompt


# A byte-level vocabulary: three special tokens, then one token per byte.
_BYTE_TOKENIZER = json.dumps({
    "version": "1.0",
    "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False} for i, t in enumerate(["<unk>", "<s>", "</s>"])],
    "normalizer": None, "pre_tokenizer": None, "post_processor": None,
    "decoder": {"type": "ByteFallback"},
    "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2,
                                       **{f"<0x{b:02X}>": b + 3 for b in range(256)}},
              "merges": [], "byte_fallback": True, "unk_token": "<unk>"},
})
