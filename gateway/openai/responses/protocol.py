"""Responses API request schema (the fields the gateway reads or checks; the rest pass through)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool

from gateway.openai.base import OpenAIBaseModel
from gateway.openai.chat.protocol import MAX_TOOLS

__all__ = ["ResponsesRequest"]


class ResponsesRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    # A string (one user turn) or a list of items: messages, function calls and their outputs,
    # reasoning items.
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    # Strict: the body may go upstream as sent, so "yes" or 1 must not mean a stream here and not there.
    stream: StrictBool | None = False
    store: StrictBool | None = True
    previous_response_id: str | None = Field(None, min_length=1, max_length=256)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    user: str | None = None
