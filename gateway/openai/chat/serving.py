"""POST /v1/chat/completions serving."""

from __future__ import annotations

from gateway.openai.chat.protocol import ChatCompletionRequest
from gateway.openai.serving import Serving

__all__ = ["ChatServing"]


class ChatServing(Serving):
    endpoint = "chat/completions"
    request_model = ChatCompletionRequest
