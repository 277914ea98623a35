"""POST /v1/completions serving."""

from __future__ import annotations

from gateway.dialect import COMPLETIONS
from gateway.openai.completions.protocol import CompletionRequest
from gateway.openai.serving import Serving

__all__ = ["CompletionServing"]


class CompletionServing(Serving):
    dialect = COMPLETIONS
    request_model = CompletionRequest
