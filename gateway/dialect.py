"""What differs between the client APIs the gateway serves, behind one interface: the seam between
an API (chat completions, completions, embeddings, Responses, Messages) and the pipeline.

Every request carries the `Dialect` of the API it came in on (declared by its `Serving` class,
gateway/openai/serving.py). The stages, the relay and the writers ask the dialect, never the
endpoint, how to:
- recognise content in that API's stream events and rebuild the whole answer (`assembler`);
- read usage, the finish reason and the tools called from a whole answer;
- frame an upstream event for the client, end a stream, and report an error before or during one;
- replay a stored answer as that API's stream (a cache hit).

Backends speak some APIs natively (`BackendSettings.native_apis`). A call on an API its backend
does not speak is translated to chat completions and its answer back by the dialect's
`Translation`: pure functions, applied at the upstream edge by `gateway/upstreams/translated.py`;
their stream halves read chat chunks through `ChatStreamTranslation`.
An API without a translation can only go to backends that speak it.

The chat-family dialects here keep the gateway's original behaviour; other APIs subclass
`Dialect` and override what differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import orjson

from gateway.completion import StreamAssembler, cached_tokens_of, called_tools, usage_of
from gateway.errors import SwitchyardError, error_event, render_error
from gateway.replay import replay_events
from gateway.types import JSON, Api, Endpoint

__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "Assembler",
    "ChatStreamTranslation",
    "Dialect",
    "StreamTranslation",
    "Translation",
]


class Assembler(Protocol):
    """Inspects a stream's events one by one (the relay commits at the first with content)."""

    usage: JSON | None
    content_chunks: int

    def feed(self, event: JSON) -> bool:
        """Record one event; True when it carries something the user sees."""
        ...

    def response(self, model: str) -> JSON:
        """The whole answer, in the API's non-streamed shape."""
        ...


class StreamTranslation(Protocol):
    """Turns one chat completions stream into one stream of the API's events."""

    def feed(self, chunk: JSON) -> list[JSON]:
        """The API's events for one chat.completion.chunk."""
        ...

    def close(self) -> list[JSON]:
        """The API's closing events, once the chat stream has ended."""
        ...


class ChatStreamTranslation(ABC):
    """The reading half of a `StreamTranslation`, shared by the translated APIs: what each chat
    chunk's choice 0 says, handed to the subclass's hooks in chat's order (reasoning, content,
    tool calls, finish). The hooks append the API's events to `out` (no list per delta)."""

    def __init__(self) -> None:
        self.started = False
        self.usage: JSON | None = None  # chat sends it last, in a chunk of its own
        self.finish_reason: str | None = None
        self.matched: Any = None  # vLLM's `stop_reason`: the stop string that matched

    def feed(self, chunk: JSON) -> list[JSON]:
        out: list[JSON] = []
        if not self.started:
            self.started = True
            self._start(chunk, out)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # the translated APIs have one answer: choice 0
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                self._text("reasoning", reasoning, out)
            if delta.get("content"):
                self._text("content", delta["content"], out)
            for call in delta.get("tool_calls") or ():
                self._tool_call(call, out)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
                self._finished(out)
        return out

    def close(self) -> list[JSON]:
        out: list[JSON] = []
        if not self.started:
            self.started = True
            self._start({}, out)
        self._end(out)
        return out

    @abstractmethod
    def _start(self, chunk: JSON, out: list[JSON]) -> None:
        """The events that open the answer (`chunk`: the first one, {} when there was none)."""

    @abstractmethod
    def _text(self, kind: Literal["reasoning", "content"], text: str, out: list[JSON]) -> None:
        """A delta of reasoning or of the answer's text."""

    @abstractmethod
    def _tool_call(self, call: JSON, out: list[JSON]) -> None:
        """One entry of a delta's `tool_calls` (a call starts, or its arguments go on)."""

    @abstractmethod
    def _finished(self, out: list[JSON]) -> None:
        """Choice 0 has finished (`finish_reason` is set); usage may still follow."""

    @abstractmethod
    def _end(self, out: list[JSON]) -> None:
        """The events that end the answer, once the chat stream has ended."""


class Translation(Protocol):
    """Pure functions between an API and chat completions. Whatever a request asks that chat
    completions cannot express raises `BadRequest` naming the field; nothing is dropped silently."""

    def request(self, body: JSON) -> JSON:
        """The chat completions body for the API's request body (a stream asks for usage)."""
        ...

    def response(self, chat: JSON, request: JSON) -> JSON:
        """The API's answer for a chat.completion."""
        ...

    def stream(self, request: JSON) -> StreamTranslation:
        """A translator for one streamed answer."""
        ...


class Dialect:
    """One client API. The defaults are chat completions'; other APIs override what differs."""

    api: Api = "chat"
    endpoint: Endpoint = "chat/completions"
    translation: Translation | None = None  # None: only backends that speak the API natively
    stream_end: bytes = b"data: [DONE]\n\n"  # written after the last event

    def __init__(self, api: Api | None = None, endpoint: Endpoint | None = None):
        if api is not None:
            self.api = api
        if endpoint is not None:
            self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.api}>"

    # -- the canonical (chat completions) form the stages read ----------------------------------

    def canonical(self, body: JSON) -> JSON | None:
        """The request as a chat completions body, for the stages that read requests (token
        estimate, cache key, intent, tool router); None when it has no such form."""
        return body

    def as_chat_answer(self, response: JSON) -> JSON | None:
        """A whole answer as a chat.completion (what the cache stores); None: not expressible."""
        return response

    def from_chat_answer(self, chat: JSON, request: JSON) -> JSON:
        """A chat.completion (a cache hit) as this API's whole answer to `request`."""
        return chat

    # -- upstream -------------------------------------------------------------------------------

    def stream_body(self, body: JSON) -> JSON:
        """A streamed request's body as sent upstream natively. Chat and completions ask for usage
        (so tokens are counted); the writer strips it when the client did not ask."""
        return {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}

    def assembler(self, assemble: bool) -> Assembler:
        return StreamAssembler(self.endpoint, assemble=assemble)

    def stream_finished(self, last: bytes) -> bool:
        """Whether an upstream stream whose last event was `last` ended properly without `[DONE]`
        (APIs such as Responses end at a closing event; chat streams must end with `[DONE]`)."""
        return False

    def error_in(self, event: JSON) -> str | None:
        """The message of an upstream event that reports a failure (None: not one)."""
        error = event.get("error")
        if not error:
            return None
        return str(error.get("message") if isinstance(error, dict) else error)

    # -- reading a whole answer -----------------------------------------------------------------

    def usage_of(self, response: JSON) -> tuple[int | None, int | None]:
        """Prompt and completion tokens."""
        return usage_of(response)

    def cached_tokens_of(self, response: JSON) -> int | None:
        """Prompt tokens the upstream served from its prompt cache (priced lower)."""
        return cached_tokens_of(response)

    def finish_reason(self, response: JSON) -> str | None:
        choices = response.get("choices") or [{}]
        return choices[0].get("finish_reason") if choices else None

    def called_tools(self, response: JSON) -> list[str]:
        return called_tools(response)

    # -- writing to the client ------------------------------------------------------------------

    def frame(self, raw: bytes, event: JSON, include_usage: bool) -> bytes | None:
        """One upstream event as SSE for the client; None: not for the client."""
        if not include_usage and event.get("usage"):
            if not event.get("choices"):
                return None  # the usage-only chunk the gateway asked for on its own behalf
            raw = orjson.dumps({k: v for k, v in event.items() if k != "usage"})
        return b"data: " + raw + b"\n\n"

    def holds(self, event: JSON) -> bool:
        """Whether the writer holds this event until the request is settled (token accounting,
        stored state): a closing event that clients act on at once."""
        return False

    def error_event(self, exc: SwitchyardError, last: JSON | None) -> bytes:
        """The event that ends a stream which failed after its first event (`last`: the last one sent)."""
        return error_event(exc)

    def render_error(
        self, exc: SwitchyardError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of an error response in this API's shape."""
        return render_error(exc, extra_headers)

    def replay(self, response: JSON, include_usage: bool) -> list[bytes]:
        """A stored whole answer as the SSE events a streaming backend would have sent."""
        return replay_events(response, include_usage=include_usage, endpoint=self.endpoint)


CHAT = Dialect("chat", "chat/completions")
COMPLETIONS = Dialect("completions", "completions")
EMBEDDINGS = Dialect("embeddings", "embeddings")
