"""A scripted upstream: an `UpstreamTransport` that plays, per call, a list of steps (events, waits,
errors, hangs), in the spirit of httpx's `MockTransport`. It lets the relay's policy be tested in
process, in milliseconds, with every timing and failure chosen by the test.

    upstream = ScriptedTransport("a", [stream("Hello", " world")])       # every call plays this
    upstream = ScriptedTransport("a", [[refuse()], stream("Hi")])         # first call refused, then served
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import UpstreamError, UpstreamStatus
from gateway.types import JSON
from gateway.upstreams.base import UpstreamCall

__all__ = [
    "Played",
    "ScriptedTransport",
    "Step",
    "chunk",
    "drop",
    "event",
    "gate",
    "hang",
    "refuse",
    "status",
    "stream",
    "wait",
]


@dataclass(frozen=True)
class Step:
    """One thing a scripted call does. `phase` "head" steps run before `send` returns (the
    upstream has not answered yet); the rest run as the body is read."""

    kind: str  # event | wait | gate | hang | raise
    phase: str = "body"
    data: bytes = b""
    seconds: float = 0.0
    error: Exception | None = None
    release: asyncio.Event | None = None


def event(data: JSON) -> Step:
    return Step("event", data=orjson.dumps(data))


def chunk(content: str | None = None, *, finish: str | None = None, role: str | None = None, **extra: Any) -> Step:
    """A chat.completion.chunk event."""
    delta: JSON = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return event(
        {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


def stream(*pieces: str, usage: tuple[int, int] | None = (3, 2)) -> list[Step]:
    """A whole chat stream: a role chunk, one chunk per piece, a finish chunk and usage."""
    steps = [chunk("", role="assistant"), *(chunk(p) for p in pieces), chunk(finish="stop")]
    if usage is not None:
        steps.append(
            event(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage[0],
                        "completion_tokens": usage[1],
                        "total_tokens": sum(usage),
                    },
                }
            )
        )
    return steps


def wait(seconds: float, *, before_head: bool = False) -> Step:
    return Step("wait", phase="head" if before_head else "body", seconds=seconds)


def gate(release: asyncio.Event, *, before_head: bool = False) -> Step:
    """Pause until the test sets `release`."""
    return Step("gate", phase="head" if before_head else "body", release=release)


def hang(*, before_head: bool = True) -> Step:
    """Never answer (until cancelled)."""
    return Step("hang", phase="head" if before_head else "body")


def refuse(message: str = "connection refused") -> Step:
    """The call fails before the upstream answers, as a refused connection does."""
    return Step("raise", phase="head", error=UpstreamError(message))


def status(code: int, message: str = "scripted error", retry_after: float | None = None) -> Step:
    """The upstream answers with an error status."""
    return Step("raise", phase="head", error=UpstreamStatus(code, message, retry_after=retry_after))


def drop() -> Step:
    """The connection breaks mid-body."""
    return Step("raise", error=UpstreamError("scripted: the upstream closed the stream before it finished"))


Script = Sequence[Step]


@dataclass
class Played:
    """What happened to one call: for the test to inspect."""

    call: UpstreamCall
    closed: bool = False
    cancelled: bool = False
    finished: bool = False  # played every step


class _Response:
    def __init__(self, played: Played, steps: list[Step]):
        self._played = played
        self._steps = steps

    async def read(self) -> bytes:
        # A plain call answers with the chat.completion its stream would assemble to.
        text = []
        async for raw in self.events():
            parsed = orjson.loads(raw)
            for choice in parsed.get("choices") or ():
                text.append((choice.get("delta") or {}).get("content") or "")
        return orjson.dumps(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(text)}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(text), "total_tokens": 3 + len(text)},
            }
        )

    async def events(self) -> AsyncIterator[bytes]:
        try:
            for step in self._steps:
                if step.kind == "event":
                    yield step.data
                else:
                    await _play(step)
            self._played.finished = True
        except asyncio.CancelledError:
            self._played.cancelled = True
            raise

    async def aclose(self) -> None:
        self._played.closed = True


async def _play(step: Step) -> None:
    if step.kind == "wait":
        await asyncio.sleep(step.seconds)
    elif step.kind == "gate":
        assert step.release is not None
        await step.release.wait()
    elif step.kind == "hang":
        await asyncio.Event().wait()
    elif step.kind == "raise":
        assert step.error is not None
        raise step.error


@dataclass
class ScriptedTransport:
    """Plays `scripts[i]` for the i-th call (the last script repeats), or `script_for(call)`."""

    name: str
    scripts: Sequence[Script] = ()
    script_for: Callable[[UpstreamCall], Script] | None = None
    models: list[str] = field(default_factory=lambda: ["m"])
    played: list[Played] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for_calls(self, n: int = 1) -> None:
        """Return once `n` calls have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.played) >= n)

    async def send(self, call: UpstreamCall) -> _Response:
        if self.script_for is not None:
            steps = list(self.script_for(call))
        else:
            steps = list(self.scripts[min(len(self.played), len(self.scripts) - 1)])
        played = Played(call)
        self.played.append(played)
        async with self._arrived:
            self._arrived.notify_all()
        head = [s for s in steps if s.phase == "head"]
        try:
            for step in head:
                await _play(step)
        except asyncio.CancelledError:
            played.cancelled = True
            raise
        return _Response(played, [s for s in steps if s.phase == "body"])

    async def list_models(self) -> list[str]:
        return list(self.models)

    async def aclose(self) -> None:
        pass
