"""Chat completions request schema (the fields the gateway reads; the rest pass through)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from gateway.openai.base import OpenAIBaseModel

__all__ = ["ChatCompletionRequest", "ChatMessage", "StreamOptions", "Tool", "ToolFunction"]

MAX_TOOLS = 10_000


class ChatMessage(OpenAIBaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ToolFunction(OpenAIBaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: ToolFunction


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None


class ChatCompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    # Strict: the body goes upstream as sent, so "yes" or 1 must not mean a stream here and not there.
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None
