"""Constrained decoding with llguidance: grammars built from JSON schemas, and per-sequence matchers.

The pool turns a request's structured-output ask into one llguidance grammar string (validated there,
so a bad schema is a 400 before anything runs); the worker keeps one `Matcher` per constrained
sequence, which says before each sampled token which tokens may come next and consumes the one
chosen. JSON comes out with `", "` and `": "` separators and no other whitespace: free whitespace lets
a small model pad forever.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import llguidance

from batching.errors import InvalidRequest

__all__ = ["GrammarTokenizer", "Matcher", "json_grammar", "lark_grammar", "schema_lark"]

_COMPACT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def json_grammar(schema: Mapping[str, Any] | None, strict: bool = True, param: str = "response_format") -> str:
    """A grammar for one JSON value valid against `schema` (any JSON object when None). Without
    `strict`, keywords llguidance does not implement are ignored instead of refused."""
    options = {**_COMPACT, "lenient": not strict}
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema if schema is not None else {"type": "object"}), overrides=options  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise InvalidRequest(f"the JSON schema is not valid: {exc}", param) from exc
    return _validated(grammar, param)


def schema_lark(schema: Mapping[str, Any], strict: bool = True) -> str:
    """`schema` as a Lark rule body, to embed in a larger grammar (`%json{...}`)."""
    if not strict:
        schema = {**schema, "x-guidance": {**_COMPACT, "lenient": True}}
    else:
        schema = {**schema, "x-guidance": _COMPACT}
    return "%json " + json.dumps(schema)


def lark_grammar(lark: str, param: str) -> str:
    return _validated(llguidance.LLMatcher.grammar_from_lark(lark), param)


def _validated(grammar: str, param: str) -> str:
    error = llguidance.LLMatcher.validate_grammar(grammar, None)
    if error and not error.startswith("WARNING"):
        raise InvalidRequest(f"the schema cannot be enforced: {error}", param)
    return grammar


class GrammarTokenizer:
    """The vocabulary as llguidance sees it, built once per worker from the tokenizer's JSON."""

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_token_ids: list[int]):
        self._tokenizer = llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_token_ids)
        self.vocab_size = vocab_size

    def matcher(self, grammar: str) -> Matcher:
        return Matcher(llguidance.LLMatcher(self._tokenizer, grammar, log_level=0))


class Matcher:
    """One sequence's position in its grammar."""

    def __init__(self, matcher: llguidance.LLMatcher):
        self._matcher = matcher
        if matcher.is_error():
            raise InvalidRequest(f"the grammar cannot be used: {matcher.get_error()}", "response_format")

    def allowed(self) -> bytes:
        """A bitmask (little-endian 32-bit words, bit i of the vocabulary) of the tokens allowed next;
        only end-of-sequence once the grammar is complete."""
        return self._matcher.compute_bitmask()

    def advance(self, token_id: int) -> bool:
        """Consume the sampled token; False when it broke the grammar (then nothing more is constrained)."""
        return self._matcher.consume_token(token_id)

    @property
    def failed(self) -> bool:
        return self._matcher.is_error()
