"""The built-in engine's outputs → OpenAI responses and stream chunks (chat and legacy completions).

Each of the `n` choices is assembled on its own: its text, its tool calls (read from the model's
markup by `batching.tool_calls.ToolCallParser` and streamed as OpenAI streams them: the call's index,
id, type and name first, then fragments of its arguments), its logprobs, its finish reason
("tool_calls" when it called a tool and stopped on its own).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson

from batching import EngineError, EngineOverloaded, GenerationOutput, InvalidRequest, TokenLogprob
from batching.params import EngineTimings
from batching.tool_calls import ToolCallEvent, ToolCallParser
from gateway.errors import BadRequest, NoBackendAvailable, UpstreamError
from gateway.types import JSON
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.local_request import EnginePlan

__all__ = ["LocalResponse", "map_engine_errors"]

TokenText = Callable[[int], tuple[str, bytes]]


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


@dataclass
class _Choice:
    index: int
    parser: ToolCallParser | None
    text: list[str] = field(default_factory=list)
    calls: list[JSON] = field(default_factory=list)  # OpenAI tool calls, arguments joined as they come
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    completion_tokens: int = 0
    started: bool = False

    def events(self, text: str, final: bool) -> list[ToolCallEvent]:
        if self.parser is None:
            return [ToolCallEvent("content", text)] if text else []
        events = self.parser.feed(text)
        return events + self.parser.finish() if final else events

    def record(self, events: list[ToolCallEvent]) -> None:
        for event in events:
            if event.kind == "content":
                self.text.append(event.text)
            elif event.kind == "call":
                self.calls.append(
                    {
                        "id": "call_" + uuid.uuid4().hex[:24],
                        "type": "function",
                        "function": {"name": event.text, "arguments": ""},
                    }
                )
            else:
                self.calls[event.index]["function"]["arguments"] += event.text

    @property
    def finish_reason(self) -> str | None:
        if self.finish == "stop" and self.calls:
            return "tool_calls"
        return self.finish


class LocalResponse:
    """One generation. `send` already holds its first output, so admission errors surfaced there."""

    def __init__(
        self,
        backend: str,
        call: UpstreamCall,
        plan: EnginePlan,
        stream: AsyncGenerator[GenerationOutput, None],
        first: GenerationOutput,
        token_text: TokenText,
    ):
        self._backend = backend
        self._call = call
        self._plan = plan
        self._stream = stream
        self._first = first
        # vLLM's extension: logprobs name tokens "token_id:<id>", for clients that need the ids.
        self._token_text = _as_ids(token_text) if call.body.get("return_tokens_as_token_ids") else token_text
        self._chat = call.endpoint == "chat/completions"
        self._id = ("chatcmpl-" if self._chat else "cmpl-") + uuid.uuid4().hex
        self._created = int(time.time())
        self._model = str(call.body.get("model", ""))
        parse = self._chat and plan.tool_mode != "none"
        self._choices = [_Choice(i, ToolCallParser() if parse else None) for i in range(plan.sampling.n)]
        self._prompt_tokens = first.prompt_tokens

    @property
    def engine_timings(self) -> EngineTimings | None:
        """When the engine queued and prefilled the first choice (the attempt's trace reads it)."""
        return self._first.timings

    async def _outputs(self) -> AsyncIterator[GenerationOutput]:
        yield self._first
        with map_engine_errors(self._backend):
            async for out in self._stream:
                yield out

    def _head(self, obj: str) -> JSON:
        return {"id": self._id, "object": obj, "created": self._created, "model": self._model}

    # -- streaming -------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[bytes]:
        head = self._head("chat.completion.chunk" if self._chat else "text_completion")
        async for out in self._outputs():
            choice = self._choices[out.index]
            choice.completion_tokens = out.completion_tokens
            final = out.finish_reason is not None
            events = choice.events(out.text, final)
            choice.record(events)
            if final:
                choice.finish = out.finish_reason
            for payload in self._chunks(choice, events, out):
                yield orjson.dumps({**head, "choices": [payload]})
            if final:
                yield orjson.dumps({**head, "choices": [self._last_chunk(choice)]})
        options = self._call.body.get("stream_options") or {}
        if options.get("include_usage"):
            yield orjson.dumps({**head, "choices": [], "usage": self._usage()})

    def _chunks(self, choice: _Choice, events: list[ToolCallEvent], out: GenerationOutput) -> Iterator[JSON]:
        logprobs = self._logprobs(out.logprobs) if out.logprobs else None
        if not self._chat:
            text = "".join(e.text for e in events)
            if text or logprobs:
                yield {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": None}
            return
        deltas: list[JSON] = []
        for event in events:
            if event.kind == "content":
                deltas.append({"content": event.text})
            elif event.kind == "call":
                call = choice.calls[event.index]
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": event.index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": event.text, "arguments": ""},
                            }
                        ]
                    }
                )
            else:
                deltas.append({"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]})
        if not choice.started:
            choice.started = True
            first = deltas[0] if deltas else {"content": ""}
            deltas[:1] = [{"role": "assistant", **first}]
        elif not deltas and logprobs:
            deltas = [{"content": ""}]
        for i, delta in enumerate(deltas):
            yield {
                "index": choice.index,
                "delta": delta,
                "logprobs": logprobs if i == 0 else None,
                "finish_reason": None,
            }

    def _last_chunk(self, choice: _Choice) -> JSON:
        if self._chat:
            return {"index": choice.index, "delta": {}, "logprobs": None, "finish_reason": choice.finish_reason}
        return {"index": choice.index, "text": "", "logprobs": None, "finish_reason": choice.finish_reason}

    # -- one response ----------------------------------------------------------------------------

    async def read(self) -> bytes:
        async for out in self._outputs():
            choice = self._choices[out.index]
            choice.completion_tokens = out.completion_tokens
            final = out.finish_reason is not None
            choice.record(choice.events(out.text, final))
            if out.logprobs:
                choice.logprobs.extend(out.logprobs)
            if final:
                choice.finish = out.finish_reason
        choices = [self._whole(c) for c in self._choices]
        head = self._head("chat.completion" if self._chat else "text_completion")
        return orjson.dumps({**head, "choices": choices, "usage": self._usage()})

    def _whole(self, choice: _Choice) -> JSON:
        text = "".join(choice.text)
        logprobs = self._logprobs(choice.logprobs) if self._plan.logprobs else None
        if not self._chat:
            return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": choice.finish_reason}
        message: JSON = {"role": "assistant", "content": text if text or not choice.calls else None}
        if choice.calls:
            message["tool_calls"] = choice.calls
        return {"index": choice.index, "message": message, "logprobs": logprobs, "finish_reason": choice.finish_reason}

    def _usage(self) -> JSON:
        completion = sum(c.completion_tokens for c in self._choices)
        return {
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self._prompt_tokens + completion,
        }

    # -- logprobs --------------------------------------------------------------------------------

    def _logprobs(self, entries: list[TokenLogprob]) -> JSON:
        if self._chat:
            return {"content": [self._chat_entry(e) for e in entries], "refusal": None}
        tokens, values, tops = [], [], []
        for e in entries:
            tokens.append(self._token_text(e.token_id)[0])
            values.append(e.logprob)
            tops.append({self._token_text(t)[0]: lp for t, lp in e.top} if self._plan.top_logprobs else None)
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops if self._plan.top_logprobs else None,
            "text_offset": _offsets(tokens),
        }

    def _chat_entry(self, entry: TokenLogprob) -> JSON:
        text, raw = self._token_text(entry.token_id)
        top = []
        for token_id, logprob in entry.top:
            t, b = self._token_text(token_id)
            top.append({"token": t, "logprob": logprob, "bytes": list(b)})
        return {"token": text, "logprob": entry.logprob, "bytes": list(raw), "top_logprobs": top}

    async def aclose(self) -> None:
        # Closing the generator cancels the sequences in their worker: their slots free next iteration.
        await self._stream.aclose()


def _as_ids(token_text: TokenText) -> TokenText:
    def named(token_id: int) -> tuple[str, bytes]:
        return f"token_id:{token_id}", token_text(token_id)[1]

    return named


def _offsets(tokens: list[str]) -> list[int]:
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return offsets
