"""The built-in engine as an upstream: OpenAI requests in, OpenAI responses and chunks out.

Maps OpenAI parameters onto the engine's sampling parameters and refuses, with a 400 naming the
parameter, what the engine cannot honour (several choices, logprobs, tools, penalties). The
engine's own exceptions are mapped here, in one place, onto the gateway's tree.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from batching import (
    EngineError,
    EngineOverloaded,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    SamplingParams,
    WorkerPool,
)
from gateway.errors import BadRequest, NoBackendAvailable, UpstreamError
from gateway.types import JSON
from gateway.upstreams.base import UpstreamCall

__all__ = ["LocalEngineTransport", "map_engine_errors", "sampling_from"]

# Fields that change nothing here (or only say what we do anyway) are accepted and ignored.
_IGNORED = {
    "model", "messages", "prompt", "stream", "stream_options", "user", "metadata", "store", "service_tier",
    "parallel_tool_calls", "temperature", "top_p", "top_k", "seed", "max_tokens", "max_completion_tokens",
    "stop", "n", "ignore_eos", "best_of", "echo", "logprobs", "top_logprobs", "presence_penalty",
    "frequency_penalty", "response_format", "tool_choice", "tools", "logit_bias", "suffix",
}
# What those fields may say without asking for something the engine cannot do.
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "echo": (None, False),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
}


@contextmanager
def map_engine_errors(backend: str) -> Iterator[None]:
    try:
        yield
    except InvalidRequest as exc:
        raise BadRequest(str(exc), param=exc.param) from None
    except EngineOverloaded as exc:
        raise NoBackendAvailable(f"local engine '{backend}' is at capacity", retry_after=exc.retry_after) from None
    except EngineError as exc:
        raise UpstreamError(f"local engine '{backend}' failed: {exc}") from None


def _check_supported(body: JSON) -> None:
    for key, value in body.items():
        if key not in _IGNORED:
            raise BadRequest(f"The local engine does not support the parameter '{key}'.", param=key)
        allowed = _HARMLESS.get(key)
        if allowed is not None and value not in allowed:
            raise BadRequest(f"The local engine does not support '{key}' = {value!r}.", param=key)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise BadRequest("The local engine supports only response_format {'type': 'text'}.", param="response_format")


def sampling_from(body: JSON, room: int) -> SamplingParams:
    """OpenAI sampling fields → the engine's, with OpenAI's defaults: without `max_tokens` the
    answer may run to the end of the context (`room` tokens after the prompt)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    stop = body.get("stop") or ()
    return SamplingParams(
        temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,
        top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
        top_k=int(body.get("top_k") or 0),
        seed=body.get("seed"),
        max_tokens=int(max_tokens) if max_tokens else max(1, room),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


class _LocalResponse:
    """One generation. `send` already holds its first output, so admission errors surfaced there."""

    def __init__(self, backend: str, call: UpstreamCall, stream: AsyncGenerator[GenerationOutput, None],
                 first: GenerationOutput):
        self._backend = backend
        self._call = call
        self._stream = stream
        self._first = first
        self._id = ("chatcmpl-" if call.endpoint == "chat/completions" else "cmpl-") + uuid.uuid4().hex
        self._created = int(time.time())
        self._model = str(call.body.get("model", ""))

    async def _outputs(self) -> AsyncIterator[GenerationOutput]:
        yield self._first
        if self._first.finish_reason is not None:
            return
        with map_engine_errors(self._backend):
            async for out in self._stream:
                yield out

    def _head(self) -> JSON:
        chat = self._call.endpoint == "chat/completions"
        obj = "chat.completion.chunk" if chat else "text_completion"
        return {"id": self._id, "object": obj, "created": self._created, "model": self._model}

    def _choice(self, text: str, finish: str | None, *, first: bool = False) -> JSON:
        if self._call.endpoint == "chat/completions":
            delta: JSON = {"role": "assistant", "content": text} if first else {"content": text}
            if finish is not None and not text:
                delta = {}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    async def events(self) -> AsyncIterator[bytes]:
        head = self._head()
        first = True
        last: GenerationOutput | None = None
        async for out in self._outputs():
            last = out
            if out.text or first:
                yield orjson.dumps({**head, "choices": [self._choice(out.text, None, first=first)]})
                first = False
            if out.finish_reason is not None:
                yield orjson.dumps({**head, "choices": [self._choice("", out.finish_reason)]})
        options = self._call.body.get("stream_options") or {}
        if last is not None and options.get("include_usage"):
            yield orjson.dumps({**head, "choices": [], "usage": _usage(last)})

    async def read(self) -> bytes:
        text: list[str] = []
        last: GenerationOutput | None = None
        async for out in self._outputs():
            text.append(out.text)
            last = out
        assert last is not None
        content = "".join(text)
        if self._call.endpoint == "chat/completions":
            choice: JSON = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                            "finish_reason": last.finish_reason}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": last.finish_reason}
            obj = "text_completion"
        head = {**self._head(), "object": obj}
        return orjson.dumps({**head, "choices": [choice], "usage": _usage(last)})

    async def aclose(self) -> None:
        # Closing the generator cancels the sequence in its worker: its slot frees next iteration.
        await self._stream.aclose()


def _usage(out: GenerationOutput) -> JSON:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
    }


def _text_only(message: JSON) -> JSON:
    """Content given as parts is joined when every part is text; other parts are refused."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BadRequest("The local engine accepts text content only.", param="messages")
        texts.append(str(part.get("text", "")))
    return {**message, "content": "".join(texts)}


class LocalEngineTransport:
    def __init__(self, name: str, pool: WorkerPool, models: list[str]):
        self.name = name
        self.pool = pool
        self._models = models

    def _prompt(self, call: UpstreamCall) -> list[int]:
        body = call.body
        if call.endpoint == "chat/completions":
            return self.pool.render_chat([_text_only(m) for m in body["messages"]])
        if call.endpoint == "completions":
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                return self.pool.encode(prompt)
            if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                return [int(t) for t in prompt]
            raise BadRequest("The local engine takes one prompt per request (a string or token ids).", param="prompt")
        raise BadRequest("The local engine does not serve embeddings.", param="model")

    async def send(self, call: UpstreamCall) -> _LocalResponse:
        if not self.pool.ready:
            raise NoBackendAvailable(f"local engine '{self.name}' is still loading its model", retry_after=5.0)
        _check_supported(call.body)
        with map_engine_errors(self.name):
            prompt = self._prompt(call)
            sampling = sampling_from(call.body, self.pool.max_model_len - len(prompt))
            request = GenerationRequest(prompt, sampling, call.priority)  # type: ignore[arg-type]
            stream = self.pool.generate(request)
            try:
                first = await anext(stream)
            except BaseException:
                await stream.aclose()
                raise
        return _LocalResponse(self.name, call, stream, first)

    async def list_models(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        await self.pool.aclose()
