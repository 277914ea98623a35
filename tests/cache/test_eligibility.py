from typing import Any

import pytest

from cache.eligibility import check_request, check_response, requested_max_tokens, serves_max_tokens
from tests.cache.support import chat, completion


@pytest.mark.parametrize(
    ("request_", "ok", "cause"),
    [
        (chat("hi"), True, ""),
        (chat("hi", temperature=0.3), True, ""),
        (chat("hi", temperature=0.31), False, "temperature"),
        ({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}, False, "temperature"),  # default 1.0
        (chat("hi", n=1), True, ""),
        (chat("hi", n=2), False, "n"),
        (chat("hi", seed=3), True, ""),
        ({"model": "m1", "messages": []}, False, "malformed"),
        ({"messages": [{"role": "user", "content": "hi"}]}, False, "malformed"),
    ],
)
def test_request_eligibility(request_: dict[str, Any], ok: bool, cause: str) -> None:
    decision = check_request(request_, max_temperature=0.3, default_temperature=1.0)
    assert (decision.ok, decision.cause) == (ok, cause)


def _tool_call() -> list[dict[str, Any]]:
    return [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


@pytest.mark.parametrize(
    ("response", "max_tokens", "ok", "cause", "truncated"),
    [
        (completion(), None, True, "", False),
        (completion(text="", tool_calls=_tool_call(), finish="tool_calls"), None, True, "", False),
        (completion(finish="length", completion_tokens=50), None, False, "length", False),  # not asked for
        (completion(finish="length", completion_tokens=30), 50, False, "length", False),  # cut by something else
        (completion(finish="length", completion_tokens=50), 50, True, "", True),  # the client's own limit
        (completion(finish="content_filter"), None, False, "content_filter", False),
        ({**completion(), "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                                       "finish_reason": None}]}, None, False, "incomplete", False),
        (completion(text="  "), None, False, "empty", False),
        (completion(text="", finish="tool_calls"), None, False, "empty", False),
        ({"error": {"message": "boom"}}, None, False, "error", False),
        ({**completion(), "choices": []}, None, False, "choices", False),
        ({**completion(), "choices": completion()["choices"] * 2}, None, False, "choices", False),
        ({**completion(), "object": "chat.completion.chunk"}, None, False, "malformed", False),
        (completion(finish="weird"), None, False, "finish_reason", False),
    ],
)
def test_response_storability(response: Any, max_tokens: int | None, ok: bool, cause: str, truncated: bool) -> None:
    decision = check_response(response, max_tokens)
    assert (decision.ok, decision.cause, decision.truncated) == (ok, cause, truncated)


@pytest.mark.parametrize(
    ("truncated", "stored", "used", "requested", "serves"),
    [
        (False, None, 40, None, True),
        (False, None, 40, 40, True),
        (False, None, 40, 39, False),  # the backend would have cut it
        (False, 100, 40, 1000, True),
        (True, 50, 50, 50, True),
        (True, 50, 50, 60, False),  # the stored answer is cut, a fresh one would go on
        (True, 50, 50, None, False),
    ],
)
def test_max_tokens_serving(truncated: bool, stored: int | None, used: int | None, requested: int | None,
                            serves: bool) -> None:
    assert serves_max_tokens(truncated=truncated, stored_max_tokens=stored, completion_tokens=used,
                             requested=requested) is serves


def test_max_completion_tokens_wins() -> None:
    assert requested_max_tokens({"max_tokens": 10, "max_completion_tokens": 20}) == 20
    assert requested_max_tokens({"max_tokens": 10}) == 10
    assert requested_max_tokens({"max_tokens": True}) is None
