"""Type aliases shared across the gateway."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["JSON", "Endpoint", "Priority"]

JSON = dict[str, Any]
Priority = Literal["interactive", "batch"]
Endpoint = Literal["chat/completions", "completions", "embeddings"]
