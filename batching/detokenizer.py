"""Streaming text from token ids: whole characters only, and stop strings cut out.

`IncrementalDetokenizer` decodes a short window of recent tokens (so merges and leading spaces come
out as in a full decode) and emits only what the newest tokens added, holding back a trailing
incomplete UTF-8 sequence (decoded as U+FFFD) until the bytes that complete it arrive.
`StopStrings` holds back text that might be the start of a stop string and ends the stream at the
first occurrence of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Decoder", "IncrementalDetokenizer", "StopStrings"]

_PROMPT_CONTEXT = 6  # prompt tokens decoded with the output, so the first token's leading space is right
_MAX_HELD_TOKENS = 16  # a window longer than this is slid forward (or, if it never ends cleanly, cut)


class Decoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: Decoder, prompt_token_ids: Sequence[int]):
        self._decoder = decoder
        self._ids = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        self._read = len(self._ids)  # the window is `_ids`; text of `_ids[:_read]` is the context
        self._sent = 0  # characters after the context already emitted

    def add(self, token_ids: Sequence[int]) -> str:
        """The new text that `token_ids` complete, possibly empty."""
        self._ids.extend(token_ids)
        out = self._emit(final=False)
        if len(self._ids) - self._read > _MAX_HELD_TOKENS:
            out += self._shorten()
        return out

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        decode = self._decoder.decode
        context = decode(self._ids[:self._read], skip_special_tokens=True)
        new = decode(self._ids, skip_special_tokens=True)[len(context):]
        if new.endswith("\ufffd") and not final:
            # Only the last replacement character can be a sequence that later bytes complete
            # (a lossy UTF-8 decode turns an unfinished one into a single U+FFFD); the rest is final.
            ready = new[:-1]
            out = ready[self._sent:]
            self._sent = max(self._sent, len(ready))
            return out
        out = new[self._sent:]
        # Slide the window: the tokens just emitted are the context for the next ones.
        self._ids = self._ids[self._read:]
        self._read, self._sent = len(self._ids), 0
        return out

    def _shorten(self) -> str:
        """Slide the window to the latest token boundary where the text ends cleanly (its text has been
        emitted), so that a long run of split characters does not make every decode longer."""
        decode = self._decoder.decode
        context = len(decode(self._ids[:self._read], skip_special_tokens=True))
        for cut in range(len(self._ids) - 1, self._read, -1):
            text = decode(self._ids[:cut], skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) - context <= self._sent:
                self._sent -= len(text) - context
                self._ids = self._ids[self._read:]
                self._read = cut - self._read
                return ""
        return self._emit(final=True)  # nothing but stray bytes: stop waiting for them to complete
class StopStrings:
    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stops)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop string was reached (nothing after it is emitted)."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        # The stop string completed first wins (earliest end, then earliest start), as if generation had
        # halted character by character: that keeps the cut independent of how the text was chunked.
        hits = [(i + len(s), i) for s, i in ((s, buffer.find(s)) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)[1]], True
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
