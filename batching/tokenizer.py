"""The pool's tokenizer: prompts and chat templates in, streamed text out (transformers, no torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batching.models import ModelSource

__all__ = ["ChatTokenizer"]


class ChatTokenizer:
    """The model's own tokenizer and chat template, loaded from the same files as the weights."""

    def __init__(self, source: ModelSource):
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"local_files_only": True}
        if source.gguf_file is not None:
            kwargs["gguf_file"] = source.gguf_file
        self._tokenizer: Any = AutoTokenizer.from_pretrained(source.directory, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        """Token ids for a plain prompt, with the special tokens the model expects (e.g. BOS)."""
        return [int(t) for t in self._tokenizer(text)["input_ids"]]

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Token ids of `messages` through the chat template; `ValueError` when there is no template."""
        if not self.has_chat_template:
            raise ValueError("the model's tokenizer has no chat template")
        text = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tools=[dict(t) for t in tools] if tools else None,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        # The template already wrote the special tokens (BOS included, where it has one).
        return [int(t) for t in self._tokenizer(text, add_special_tokens=False)["input_ids"]]
