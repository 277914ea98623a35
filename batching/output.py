"""One choice's stream: token ids in, `GenerationOutput`s of whole characters out, stop strings cut."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from batching.detokenizer import Decoder, IncrementalDetokenizer, StopStrings
from batching.params import GenerationOutput, TokenLogprob

__all__ = ["ChoiceStream", "TokenArrival"]

# (token id, finish reason from the worker or None, logprobs when asked for)
TokenArrival = tuple[int, str | None, TokenLogprob | None]


class ChoiceStream:
    def __init__(self, index: int, decoder: Decoder, prompt_token_ids: Sequence[int], stop: Sequence[str],
                 want_logprobs: bool):
        self.index = index
        self._detokenizer = IncrementalDetokenizer(decoder, prompt_token_ids)
        self._stops = StopStrings(stop)
        self._prompt_tokens = len(prompt_token_ids)
        self._want_logprobs = want_logprobs
        self.completion_tokens = 0
        self.finish_reason: Literal["stop", "length"] | None = None
        self._ids: list[int] = []
        self._logprobs: list[TokenLogprob] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, arrivals: list[TokenArrival]) -> GenerationOutput | None:
        """The output these tokens complete, or None while their text is held back (a partial
        character or a possible stop string); the last one carries the finish reason."""
        finish: str | None = None
        new: list[int] = []
        for token, reason, logprob in arrivals:
            new.append(token)
            finish = reason
            if logprob is not None:
                self._logprobs.append(logprob)
        self.completion_tokens += len(new)
        self._ids.extend(new)
        text = self._detokenizer.add(new)
        if finish is not None:
            text += self._detokenizer.flush()
        text, stopped = self._stops.feed(text)
        if stopped:
            finish = "stop"
        elif finish is not None:
            text += self._stops.flush()
        if not text and finish is None:
            return None  # token ids ride along with the next piece of text
        self.finish_reason = None if finish is None else ("length" if finish == "length" else "stop")
        out = GenerationOutput(
            text, self._ids, self.finish_reason, self._prompt_tokens, self.completion_tokens, self.index,
            self._logprobs if self._want_logprobs else None,
        )
        self._ids, self._logprobs = [], []
        return out
