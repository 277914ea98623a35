"""How a tool is seen by the scorers: its identity (a hash of its definition), its text, its words.

The text given to the embedder was chosen on BFCL (tune split): the name split into words, the
description, then each parameter's name and description. The raw JSON schema scored worse: its
braces and type names are noise to a sentence model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dense_text", "description_text", "lexical_text", "split_identifier", "tool_hash", "tool_name"]

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SEPARATORS = re.compile(r"[._\-/:]+")


def tool_name(tool: Mapping[str, Any]) -> str | None:
    """The function name of an OpenAI tool dict, or None for a tool that is not a named function."""
    function = tool.get("function")
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return str(function["name"])
    return None


def tool_hash(tool: Mapping[str, Any]) -> str:
    """A stable id of the whole definition: equal definitions share embeddings across requests and replicas."""
    canonical = json.dumps(tool, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def split_identifier(name: str) -> str:
    """`get_currentWeather.v2` -> `get current Weather v2`."""
    name = _ACRONYM.sub(r"\1 \2", _CAMEL.sub(r"\1 \2", name))
    return " ".join(_SEPARATORS.sub(" ", name).split())


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else {}


def _properties(function: Mapping[str, Any]) -> Mapping[str, Any]:
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    return properties if isinstance(properties, Mapping) else {}


def _description(function: Mapping[str, Any]) -> str:
    description = function.get("description")
    return description.strip() if isinstance(description, str) else ""


def dense_text(tool: Mapping[str, Any]) -> str:
    function = _function(tool)
    name = split_identifier(str(function.get("name", "")))
    params = []
    for key, spec in _properties(function).items():
        text = spec.get("description") if isinstance(spec, Mapping) else None
        params.append(f"{split_identifier(str(key))}: {text}" if isinstance(text, str) else split_identifier(str(key)))
    text = f"{name}: {_description(function)}"
    return f"{text} Parameters: {'; '.join(params)}" if params else text


def description_text(tool: Mapping[str, Any]) -> str:
    """The description alone (the name when there is none): a second, sharper view of what the tool does."""
    function = _function(tool)
    return _description(function) or split_identifier(str(function.get("name", "")))


def lexical_text(tool: Mapping[str, Any]) -> str:
    """Words for BM25: the dense text, the name once more (names are the densest clue), enum values."""
    function = _function(tool)
    enums: list[str] = []
    for spec in _properties(function).values():
        values = spec.get("enum") if isinstance(spec, Mapping) else None
        if isinstance(values, list):
            enums.extend(str(v) for v in values)
    return " ".join([dense_text(tool), split_identifier(str(function.get("name", ""))), *enums])
