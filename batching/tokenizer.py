"""The pool's tokenizer: prompts and chat templates in, streamed text out (transformers, no torch)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from batching.models import ModelSource
from batching.tool_calls import CALL_CLOSE, CALL_OPEN, tools_system_prompt

__all__ = ["ChatTokenizer"]


class ChatTokenizer:
    """The model's own tokenizer and chat template, loaded from the same files as the weights."""

    def __init__(self, source: ModelSource):
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"local_files_only": True}
        if source.gguf_file is not None:
            kwargs["gguf_file"] = source.gguf_file
        self._tokenizer: Any = AutoTokenizer.from_pretrained(source.directory, **kwargs)
        self._byte_decoder = _byte_level_decoder()

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    @property
    def template_takes_tools(self) -> bool:
        return "tools" in str(getattr(self._tokenizer, "chat_template", None) or "")

    def encode(self, text: str) -> list[int]:
        """Token ids for a plain prompt, with the special tokens the model expects (e.g. BOS)."""
        return [int(t) for t in self._tokenizer(text)["input_ids"]]

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))

    def to_json(self) -> str:
        """The `tokenizers` JSON of the vocabulary (what llguidance builds its token trie from)."""
        return str(self._tokenizer.backend_tokenizer.to_str())

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        """A token's text and its bytes: a byte-level BPE piece maps back to the bytes it encodes,
        which may be part of one UTF-8 character (the text then has U+FFFD)."""
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece and all(ch in self._byte_decoder for ch in piece):
            raw = bytes(self._byte_decoder[ch] for ch in piece)
        else:
            raw = self.decode([token_id], skip_special_tokens=False).encode()
        return raw.decode("utf-8", errors="replace"), raw

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Token ids of `messages` through the chat template; `ValueError` when there is no template.
        A template without a tools section gets the tools in its system prompt (`tools_system_prompt`)."""
        if not self.has_chat_template:
            raise ValueError("the model's tokenizer has no chat template")
        chat = [dict(m) for m in messages]
        if tools and not self.template_takes_tools:
            chat = _with_tools_in_system(chat, tools)
        text = self._tokenizer.apply_chat_template(
            chat,
            tools=[dict(t) for t in tools] if tools and self.template_takes_tools else None,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        # The template already wrote the special tokens (BOS included, where it has one).
        return [int(t) for t in self._tokenizer(text, add_special_tokens=False)["input_ids"]]


def _with_tools_in_system(messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools offered in the system prompt (after the caller's own system text), and earlier calls
    and results in the markup the model answers in."""
    offer = tools_system_prompt(tools)
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            rendered = [{"name": c["function"]["name"], "arguments": _arguments(c["function"].get("arguments"))}
                        for c in calls]
            text = str(message.get("content") or "")
            message["content"] = text + CALL_OPEN + json.dumps(rendered) + CALL_CLOSE
            message.pop("tool_calls")
        if message.get("content") is None:
            message["content"] = ""
        out.append(message)
    if out and out[0].get("role") in ("system", "developer"):
        out[0] = {**out[0], "role": "system", "content": f"{out[0]['content']}\n\n{offer}"}
    else:
        out.insert(0, {"role": "system", "content": offer})
    return out


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-to-printable map, inverted: byte-level BPE pieces back to bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}
