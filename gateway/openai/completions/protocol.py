"""Legacy completions request schema."""

from __future__ import annotations

from pydantic import Field, StrictBool

from gateway.openai.base import OpenAIBaseModel
from gateway.openai.chat.protocol import StreamOptions

__all__ = ["CompletionRequest"]


class CompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | list[int] | list[list[int]]
    # Strict: the body goes upstream as sent, so "yes" or 1 must not mean a stream here and not there.
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=0, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
