"""Hostile and absurd requests over real HTTP, one table: huge bodies (declared and chunked), deep
nesting, invalid UTF-8, lone surrogates, wrong types, absurd `max_tokens` and `n`, thousands of
tools, empty messages, odd headers. Each gets an OpenAI-shaped 4xx or a valid answer; none gets a
5xx or a stack trace, and the gateway keeps serving afterwards.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.auth import hash_key
from tests.faults.oracle import assert_error_shape
from tests.support.processes import ServerProcess
from tests.support.stack import sim_backend, start_gateway, start_sim

KEY = "sk-fuzz-tenant"
LIMIT = 64 * 1024
CHAT = "/v1/chat/completions"
ASK: dict[str, Any] = {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("bad-input")
    sim = start_sim("--output-tokens", "3", log_dir=tmp)
    config = {
        "auth": {"keys": [{"sha256": hash_key(KEY), "tenant": "fuzz"}]},
        "server": {"max_body_bytes": LIMIT},
        "backends": [sim_backend("s", sim)],
    }
    gw = start_gateway(config, tmp)
    try:
        yield gw
    finally:
        gw.stop()
        sim.stop()


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def _deep(depth: int) -> bytes:
    return b'{"model": "sim-model", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def _chunks(total: int) -> Iterator[bytes]:
    """A body sent in pieces without a Content-Length: the limit must hold while it streams in."""
    yield b'{"model": "sim-model", "messages": [{"role": "user", "content": "'
    for _ in range(total // 8192):
        yield b"x" * 8192
    yield b'"}]}'


# name → (method, path, body, extra headers, statuses accepted)
CASES: dict[str, tuple[str, str, Any, dict[str, str], set[int]]] = {
    "empty body": ("POST", CHAT, b"", {}, {400}),
    "null": ("POST", CHAT, b"null", {}, {400}),
    "array body": ("POST", CHAT, b"[1, 2]", {}, {400}),
    "number body": ("POST", CHAT, b"123", {}, {400}),
    "truncated json": ("POST", CHAT, b'{"model": "sim-model", "messages": [', {}, {400}),
    "invalid utf-8": ("POST", CHAT, b'{"model": "sim\xc3\x28", "messages": []}', {}, {400}),
    "utf-16 body": ("POST", CHAT, json.dumps(ASK).encode("utf-16"), {}, {400}),
    "lone surrogate": (
        "POST",
        CHAT,
        b'{"model": "sim-model", "messages": [{"role": "user", "content": "\\ud800"}]}',
        {},
        {200, 400},
    ),
    "NaN temperature": ("POST", CHAT, b'{"model": "sim-model", "messages": [], "temperature": NaN}', {}, {400}),
    "deep nesting 100k": ("POST", CHAT, _deep(100_000), {}, {400, 413}),
    "deep nesting 500 in content": (
        "POST",
        CHAT,
        _json({**ASK, "messages": [{"role": "user", "content": [json.loads("[" * 500 + "]" * 500)]}]}),
        {},
        {200, 400},
    ),
    "body over the limit (declared)": ("POST", CHAT, _json({**ASK, "pad": "x" * (LIMIT + 10)}), {}, {413}),
    "body over the limit (chunked)": ("POST", CHAT, _chunks(LIMIT * 4), {}, {413}),
    "empty messages": ("POST", CHAT, _json({**ASK, "messages": []}), {}, {400}),
    "message without role": ("POST", CHAT, _json({**ASK, "messages": [{"content": "x"}]}), {}, {400}),
    "messages as a string": ("POST", CHAT, _json({**ASK, "messages": "hello"}), {}, {400}),
    "model as a number": ("POST", CHAT, _json({**ASK, "model": 7}), {}, {400}),
    "model 10k chars": ("POST", CHAT, _json({**ASK, "model": "m" * 10_000}), {}, {400}),
    "stream as a string": ("POST", CHAT, _json({**ASK, "stream": "yes"}), {}, {400}),
    "stream as 1": ("POST", "/v1/completions", _json({"model": "sim-model", "prompt": "x", "stream": 1}), {}, {400}),
    "stream_options as a string": ("POST", CHAT, _json({**ASK, "stream": True, "stream_options": "yes"}), {}, {400}),
    "max_tokens 10^12": ("POST", CHAT, _json({**ASK, "max_tokens": 10**12}), {}, {400}),
    "max_tokens 10^30": ("POST", CHAT, _json({**ASK, "max_tokens": 10**30}), {}, {400}),
    "max_tokens -1": ("POST", CHAT, _json({**ASK, "max_tokens": -1}), {}, {400}),
    "max_tokens 1e6 (the cap)": ("POST", CHAT, _json({**ASK, "max_tokens": 1_000_000}), {}, {200}),
    "n 10^9": ("POST", CHAT, _json({**ASK, "n": 10**9}), {}, {400}),
    "temperature as text": ("POST", CHAT, _json({**ASK, "temperature": "hot"}), {}, {400}),
    "5000 tools": ("POST", CHAT, _json({**ASK, "tools": [TOOL] * 5000}), {}, {200, 413}),
    "3000 distinct tools": (
        "POST",
        CHAT,
        _json({**ASK, "tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(3000)]}),
        {},
        {200, 413},
    ),
    "10001 tools": ("POST", CHAT, _json({**ASK, "tools": [{"function": {"name": "t"}}] * 10_001}), {}, {400, 413}),
    "tool with a bad name": ("POST", CHAT, _json({**ASK, "tools": [{"function": {"name": "a b;c"}}]}), {}, {400}),
    "tool_choice of an absent tool": (
        "POST",
        CHAT,
        _json({**ASK, "tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "missing"}}}),
        {},
        {200, 400},
    ),
    "null bytes in content": (
        "POST",
        CHAT,
        _json({**ASK, "messages": [{"role": "user", "content": "a\x00b"}]}),
        {},
        {200},
    ),
    "completions prompt of ints": (
        "POST",
        "/v1/completions",
        _json({"model": "sim-model", "prompt": [1, 2, 3]}),
        {},
        {200, 400},
    ),
    "embeddings input null": ("POST", "/v1/embeddings", _json({"model": "sim-model", "input": None}), {}, {400}),
    "GET on a POST endpoint": ("GET", CHAT, None, {}, {405}),
    "unknown path": ("POST", "/v1/nope", _json(ASK), {}, {404}),
    "x-request-id with spaces": ("POST", CHAT, _json(ASK), {"x-request-id": "a b c" * 50}, {200}),
    "priority header garbage": ("POST", CHAT, _json(ASK), {"x-switchyard-priority": "urgent!!"}, {200}),
    "cache-control garbage": ("POST", CHAT, _json(ASK), {"cache-control": "no-cache, =, ;;, max-age=-1"}, {200}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_4xx_or_an_answer(gateway: ServerProcess, name: str) -> None:
    method, path, body, headers, accepted = CASES[name]
    response = httpx.request(
        method,
        gateway.url + path,
        content=body,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers},
        timeout=30,
    )
    assert response.status_code in accepted, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text and 'File "' not in response.text
    if response.status_code >= 400:
        assert_error_shape(response.json()["error"])
    else:
        assert response.json()["choices"]
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer  \t x", "Basic abc", "bearer " + "k" * 20_000, "Bearer sk-\u00e9t\u00e9", "Bearer a\tb"],
    ids=["empty", "scheme only", "blank key", "basic", "20k key", "non-ascii", "tab"],
)
def test_odd_authorization_headers_get_a_401(gateway: ServerProcess, authorization: str) -> None:
    response = httpx.post(
        gateway.url + CHAT, content=_json(ASK), headers={b"authorization": authorization.encode("utf-8")}, timeout=10
    )
    assert response.status_code in (400, 401), response.text[:300]
    assert_error_shape(response.json()["error"])


def test_the_gateway_still_serves_after_all_of_it(gateway: ServerProcess) -> None:
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    ok = httpx.post(gateway.url + CHAT, json=ASK, headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_a_request_http_itself_cannot_parse_gets_a_400(gateway: ServerProcess) -> None:
    """Bytes the HTTP parser refuses (a control character in a header) never reach the gateway's
    code: the server answers 400 itself, in plain text, and keeps serving."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncache-control: a\x7fb\r\ncontent-length: 2\r\n\r\n{}"
        )
        assert sock.recv(200).startswith(b"HTTP/1.1 400")
    assert httpx.get(gateway.url + "/healthz").status_code == 200
