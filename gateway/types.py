"""Type aliases shared across the gateway."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["JSON", "Api", "Endpoint", "Priority"]

JSON = dict[str, Any]
Priority = Literal["interactive", "batch"]
# A client API's path under /v1 (the metrics label), and its name in a backend's `apis` list.
Endpoint = Literal["chat/completions", "completions", "embeddings", "responses", "messages", "messages/count_tokens"]
Api = Literal["chat", "completions", "embeddings", "responses", "messages"]
