"""The base of every wire model: known fields are validated, unknown ones pass through untouched."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import BadRequest
from gateway.types import JSON

__all__ = ["OpenAIBaseModel", "parse_body"]


class OpenAIBaseModel(BaseModel):
    # Unknown fields are the upstream's business (vendor extensions, newer API fields).
    model_config = ConfigDict(extra="allow")


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_body(raw: bytes, model: type[OpenAIBaseModel]) -> tuple[JSON, OpenAIBaseModel]:
    """Parse and validate a request body. Returns the body as sent (for forwarding) and the model."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object (UTF-8)."
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        param = _param(loc) or None
        message = err["msg"]
        if err["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        elif param:
            message = f"Invalid value for '{param}': {message}."
        raise BadRequest(message, param=param, code="invalid_value") from None
    return body, parsed
