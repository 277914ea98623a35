"""A careless OpenAI-compatible upstream that repeats the caller's credentials back.

Real providers do this in places (an "Incorrect API key provided: sk-…" message, a proxy that
echoes headers, an error event that quotes the request). The gateway must never pass any of it on.
Which answer comes back is chosen by the request body's `echo` field:

    ok, status-400, status-401, status-403, status-429, status-500, plain-text-500,
    stream-error (a mid-stream error event), header (a 200 whose headers carry the key),
    quote (an answer, plain or streamed, whose text quotes the key)

Run with `python -m tests.security.echo_upstream --port N`.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

__all__ = ["app"]

Scope = dict[str, Any]


def _auth(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return ""


async def _body(receive: Any) -> bytes:
    out = b""
    while True:
        message = await receive()
        out += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return out


async def _send(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _completion(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 0,
            "model": "echo-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    auth = _auth(scope)
    if scope["path"].endswith("/models"):
        await _send(send, 200, orjson.dumps({"object": "list", "data": [{"id": "echo-model", "object": "model"}]}))
        return
    request = orjson.loads(await _body(receive) or b"{}")
    mode = str(request.get("echo", "ok"))
    said = f"Incorrect API key provided: {auth.removeprefix('Bearer ')} (you sent: {auth})"
    if mode.startswith("status-"):
        status = int(mode.split("-")[1])
        error = {"error": {"message": said, "type": "invalid_request_error", "code": "invalid_api_key"}}
        await _send(send, status, orjson.dumps(error), [(b"retry-after", b"1"), (b"x-echo-auth", auth.encode())])
    elif mode == "plain-text-500":
        await _send(send, 500, said.encode(), content_type=b"text/plain")
    elif mode == "header":
        await _send(send, 200, _completion("fine"), [(b"x-echo-auth", auth.encode()), (b"set-cookie", auth.encode())])
    elif mode == "quote" and request.get("stream"):
        head = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0, "model": "echo-model"}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": said}}]}
        last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await send({"type": "http.response.body", "body": _chunk(first) + _chunk(last) + b"data: [DONE]\n\n"})
    elif mode == "quote":
        await _send(send, 200, _completion(said))
    elif mode == "stream-error":
        head = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0, "model": "echo-model"}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]}
        await send({"type": "http.response.body", "body": _chunk(first), "more_body": True})
        error = {"error": {"message": said, "type": "server_error"}}
        await send({"type": "http.response.body", "body": _chunk(error), "more_body": False})
    else:
        await _send(send, 200, _completion("fine"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
