"""What a request asks for, as the one text both the semantic cache and the tool router embed.

The pipeline computes it once per request (`RequestContext.intent`) and hands the text to
`ResponseCache.lookup` and `ToolRouter.narrow`; the shared embedding is memoised by text, so one
text means one embedding. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["intent_text"]


def _text_parts(content: Any) -> str:
    """A message's text: the string itself, or its text parts joined by newlines (parts are separate
    blocks; a newline keeps their last and first words apart, and the embedder reads it as a space)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") in ("text", None)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def intent_text(messages: Any) -> str:
    """The latest user turn that has text, stripped; "" when there is none.

    Earlier turns and the system prompt are left out: they are the same for every request of an
    application, so they cannot tell its intents apart (the cache compares them exactly, in its
    scope key). Surrounding whitespace is stripped because neither the embedder nor the cache's
    guards give it meaning, and two requests that differ only in it should share one embedding.
    There is no length cut here: the cache's guards compare the whole text, and the embedder bounds
    what it tokenises itself.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes | bytearray):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = _text_parts(message.get("content")).strip()
            if text:
                return text
    return ""
