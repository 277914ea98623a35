"""Messages request schemas (the fields the gateway reads; the rest pass through on native relay)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from gateway.openai.base import OpenAIBaseModel

__all__ = ["CountTokensRequest", "MessageParam", "MessagesRequest", "ToolParam"]

MAX_TOOLS = 10_000


class MessageParam(OpenAIBaseModel):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class ToolParam(OpenAIBaseModel):
    # Client tools carry `input_schema`; server tools (web search, bash, ...) a versioned `type`.
    name: str = Field(min_length=1, max_length=128)
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class _Prompt(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[ToolParam] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(_Prompt):
    max_tokens: int = Field(ge=1, le=1_000_000)
    # Strict: the body goes upstream as sent, so "yes" or 1 must not mean a stream here and not there.
    stream: StrictBool | None = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(_Prompt):
    pass
