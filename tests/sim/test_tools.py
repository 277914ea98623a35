"""Tool choice and argument synthesis (tables, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sim.tools import choose_tool, split_arguments, tool_arguments, tool_name


def fn(name: str, description: str = "", params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": params or {"type": "object", "properties": {}},
        },
    }


TOOLS = [
    fn("get_time", "current time in a timezone"),
    fn("get_weather", "weather forecast for a city"),
    fn("sendEmail", "send a message to someone"),
    fn("search_flights", "find flights between airports"),
]


@pytest.mark.parametrize(
    ("choice", "text", "expected"),
    [
        (None, "what's the weather in Oslo", "get_weather"),
        ("auto", "please send an email to Bob", "sendEmail"),
        ("required", "find me flights to Rome", "search_flights"),
        (None, "nothing in common here", "get_time"),  # no overlap: the first tool
        ({"type": "function", "function": {"name": "sendEmail"}}, "weather", "sendEmail"),
        ("none", "weather", None),
        ({"type": "function", "function": {"name": "missing"}}, "weather", None),
    ],
)
def test_choose_tool(choice: Any, text: str, expected: str | None) -> None:
    chosen = choose_tool(TOOLS, choice, text)
    assert (tool_name(chosen) if chosen else None) == expected


def test_forced_tool_beats_matching() -> None:
    assert tool_name(choose_tool(TOOLS, "auto", "weather", forced="get_time")) == "get_time"


def test_no_usable_tools() -> None:
    assert choose_tool([{"type": "function"}], None, "x") is None


def test_arguments_fill_required_properties_by_type() -> None:
    schema = {
        "type": "object",
        "required": ["city", "days", "units", "detailed", "tags", "loc"],
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["metric", "imperial"]},
            "detailed": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "loc": {"type": "object", "properties": {"lat": {"type": "number"}}},
            "optional": {"type": "string"},
        },
    }
    args = json.loads(tool_arguments(fn("f", params=schema), "weather in Oslo"))
    assert args == {
        "city": "weather oslo",
        "days": 5,
        "units": "metric",
        "detailed": True,
        "tags": ["weather oslo"],
        "loc": {"lat": 1.5},
    }


@pytest.mark.parametrize(
    ("text", "pieces", "expected"),
    [
        ("abcdef", 3, ["ab", "cd", "ef"]),
        ("abcdefg", 3, ["abc", "de", "fg"]),
        ("ab", 5, ["a", "b"]),
        ("", 3, [""]),
        ("abc", 1, ["abc"]),
    ],
)
def test_split_arguments(text: str, pieces: int, expected: list[str]) -> None:
    assert split_arguments(text, pieces) == expected
