"""The built-in engine as an upstream: OpenAI requests in, OpenAI responses and chunks out.

`local_request` maps OpenAI parameters onto the engine's request (sampling, `response_format` and
forced tool calls as grammars) and refuses, with a 400 naming the parameter, what the engine cannot
honour; `local_response` renders what comes back. The engine's own exceptions are mapped onto the
gateway's tree in one place (`map_engine_errors`).
"""

from __future__ import annotations

from typing import Any

from batching import GenerationRequest, WorkerPool
from gateway.errors import BadRequest, NoBackendAvailable
from gateway.types import JSON
from gateway.upstreams.base import UpstreamCall
from gateway.upstreams.local_request import check_supported, plan_request, sampling_from
from gateway.upstreams.local_response import LocalResponse, map_engine_errors

__all__ = ["LocalEngineTransport", "map_engine_errors", "sampling_from"]


def _text_only(message: JSON) -> JSON:
    """Content given as parts is joined when every part is text; other parts are refused."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise BadRequest("The local engine accepts text content only.", param="messages")
        texts.append(str(part.get("text", "")))
    return {**message, "content": "".join(texts)}


class LocalEngineTransport:
    def __init__(self, name: str, pool: WorkerPool, models: list[str]):
        self.name = name
        self.pool = pool
        self._models = models

    def _prompt(self, call: UpstreamCall, tools: list[Any]) -> list[int]:
        body = call.body
        if call.endpoint == "chat/completions":
            return self.pool.render_chat([_text_only(m) for m in body["messages"]], tools=tools or None)
        if call.endpoint == "completions":
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                return self.pool.encode(prompt)
            if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                return [int(t) for t in prompt]
            raise BadRequest("The local engine takes one prompt per request (a string or token ids).", param="prompt")
        raise BadRequest("The local engine does not serve embeddings.", param="model")

    async def send(self, call: UpstreamCall) -> LocalResponse:
        if not self.pool.ready:
            raise NoBackendAvailable(f"local engine '{self.name}' is still loading its model", retry_after=5.0)
        check_supported(call.body)
        chat = call.endpoint == "chat/completions"
        with map_engine_errors(self.name):
            # The plan's tools decide the prompt, and the prompt's length the default max_tokens.
            tools = plan_request(call.body, 1, chat).tools
            prompt = self._prompt(call, tools)
            plan = plan_request(call.body, self.pool.max_model_len - len(prompt), chat)
            request = GenerationRequest(prompt, plan.sampling, call.priority, plan.grammar)  # type: ignore[arg-type]
            stream = self.pool.generate(request)
            try:
                first = await anext(stream)
            except BaseException:
                await stream.aclose()
                raise
        return LocalResponse(self.name, call, plan, stream, first, self.pool.token_text)

    async def list_models(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        await self.pool.aclose()
