"""POST /v1/chat/completions serving."""

from __future__ import annotations

from gateway.dialect import CHAT
from gateway.openai.chat.protocol import ChatCompletionRequest
from gateway.openai.serving import Serving

__all__ = ["ChatServing"]


class ChatServing(Serving):
    dialect = CHAT
    request_model = ChatCompletionRequest
