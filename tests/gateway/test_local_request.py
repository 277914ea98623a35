"""OpenAI bodies → the engine's request: what maps to what, and the 400 that names what cannot."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.upstreams.local_request import check_supported, plan_request

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}

MAPPED = [
    ("defaults", {}, {"n": 1, "temperature": 1.0, "max_tokens": 100, "logprobs": False}, "none", False),
    ("max_completion_tokens wins", {"max_completion_tokens": 7, "max_tokens": 9}, {"max_tokens": 7}, "none", False),
    ("penalties", {"presence_penalty": 0.5, "frequency_penalty": -1, "repetition_penalty": 1.2},
     {"presence_penalty": 0.5, "frequency_penalty": -1.0, "repetition_penalty": 1.2}, "none", False),
    ("logprobs", {"logprobs": True, "top_logprobs": 4}, {"logprobs": True, "top_logprobs": 4}, "none", False),
    ("n and stops", {"n": 3, "stop": "END", "stop_token_ids": [5]},
     {"n": 3, "stop": ("END",), "stop_token_ids": (5,)}, "none", False),
    ("json_object", {"response_format": {"type": "json_object"}}, {}, "none", True),
    ("json_schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}}, "strict": True}}}, {}, "none", True),
    ("text is no grammar", {"response_format": {"type": "text"}}, {}, "none", False),
    ("tools, auto", {"tools": [TOOL]}, {}, "auto", False),
    ("tools, none", {"tools": [TOOL], "tool_choice": "none"}, {}, "none", False),
    ("tools, required", {"tools": [TOOL], "tool_choice": "required"}, {}, "forced", True),
    ("tools, named", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}}, {},
     "forced", True),
]


@pytest.mark.parametrize(("case", "body", "sampling", "mode", "grammar"), MAPPED, ids=[m[0] for m in MAPPED])
def test_bodies_map_onto_the_engine(case: str, body: dict[str, Any], sampling: dict[str, Any], mode: str,
                                    grammar: bool) -> None:
    check_supported(body)
    plan = plan_request(body, 100, chat=True)
    for key, value in sampling.items():
        assert getattr(plan.sampling, key) == value, (case, key)
    assert plan.tool_mode == mode and (plan.grammar is not None) is grammar


def test_legacy_completions_logprobs_is_a_count() -> None:
    plan = plan_request({"logprobs": 3}, 10, chat=False)
    assert plan.sampling.logprobs and plan.sampling.top_logprobs == 3
    assert not plan_request({"logprobs": None}, 10, chat=False).sampling.logprobs


REFUSED = [
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"echo": True}, "echo"),
    ({"best_of": 2}, "best_of"),
    ({"audio": {}}, "audio"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"temperature": "hot"}, "temperature"),
    ({"n": 99}, "n"),
    ({"response_format": {"type": "grammar"}}, "response_format"),
    ({"response_format": "json"}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}}}},
     "response_format"),
]


@pytest.mark.parametrize(("body", "param"), REFUSED, ids=[r[1] + str(i) for i, r in enumerate(REFUSED)])
def test_what_cannot_be_honoured_is_a_400_naming_it(body: dict[str, Any], param: str) -> None:
    from batching import InvalidRequest

    with pytest.raises((BadRequest, InvalidRequest)) as info:
        check_supported(body)
        plan_request(body, 100, chat=True)
    assert getattr(info.value, "param", None) == param
