from typing import Any

import pytest

from router.intent import called_tools, forced_tools


def test_called_tools_reads_tool_calls_and_legacy_shapes() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [
                {"type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"type": "function", "function": {"name": "b", "arguments": "{}"}},
            ],
        },
        {"role": "assistant", "function_call": {"name": "c", "arguments": "{}"}},
        {"role": "function", "name": "d", "content": "r"},
        {"role": "user", "content": "call e", "name": "e"},  # a user's name is not a tool
    ]
    assert called_tools(messages) == {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        (None, set()),
        ("auto", set()),
        ("required", set()),
        ("none", set()),
        ({"type": "function", "function": {"name": "f"}}, {"f"}),
        ({"type": "function", "name": "g"}, {"g"}),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "name": "b"}],
                },
            },
            {"a", "b"},
        ),
        ({"type": "function"}, set()),
    ],
)
def test_forced_tools(choice: object, names: set[str]) -> None:
    assert forced_tools(choice) == names
