"""Streaming text from token ids: whole characters only, and stop strings cut out.

`IncrementalDetokenizer` decodes a short window of recent tokens and emits only what the newest
tokens added, holding back output while it ends in an incomplete UTF-8 sequence (decoded as U+FFFD)
or before a merge that later tokens may still change. `StopStrings` holds back text that might be the
start of a stop string and ends the stream at the first occurrence of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Decoder", "IncrementalDetokenizer", "StopStrings"]

_PROMPT_CONTEXT = 6  # prompt tokens decoded with the output, so the first token's leading space is right
_MAX_HELD_TOKENS = 8  # more than any UTF-8 character needs: past this an incomplete sequence is final


class Decoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: Decoder, prompt_token_ids: Sequence[int]):
        self._decoder = decoder
        self._ids = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        self._prefix = 0  # window start: tokens before it are never decoded again
        self._read = len(self._ids)  # tokens before it have been emitted

    def add(self, token_ids: Sequence[int]) -> str:
        """The new text that `token_ids` complete, possibly empty."""
        self._ids.extend(token_ids)
        held = len(self._ids) - self._read
        return self._emit(final=held > _MAX_HELD_TOKENS)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        decode = self._decoder.decode
        before = decode(self._ids[self._prefix:self._read], skip_special_tokens=True)
        text = decode(self._ids[self._prefix:], skip_special_tokens=True)
        if len(text) <= len(before) or (text.endswith("\ufffd") and not final):
            return ""
        # Move the window: the emitted tokens become the context for the next ones.
        self._ids = self._ids[self._read:]
        self._prefix, self._read = 0, len(self._ids)
        return text[len(before):]


class StopStrings:
    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stops)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop string was reached (nothing after it is emitted)."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep:]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that is the beginning of some stop string."""
        longest = max(len(s) for s in self._stops) - 1
        for k in range(min(len(buffer), longest), 0, -1):
            tail = buffer[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0
