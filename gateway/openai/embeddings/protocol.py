"""Embeddings request schema."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.openai.base import OpenAIBaseModel

__all__ = ["EmbeddingRequest"]


class EmbeddingRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(None, ge=1, le=65536)
    user: str | None = None
