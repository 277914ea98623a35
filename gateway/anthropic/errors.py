"""Errors in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, with Anthropic's
type names per status; mid-stream as an `event: error`, which the anthropic SDK raises."""

from __future__ import annotations

import orjson

from gateway.anthropic.wire import named_event
from gateway.errors import SwitchyardError
from gateway.types import JSON

__all__ = ["error_body", "error_event", "error_payload", "error_type"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def error_payload(exc: SwitchyardError) -> JSON:
    return {"type": "error", "error": {"type": error_type(exc.status), "message": exc.message}}


def error_body(exc: SwitchyardError) -> bytes:
    return orjson.dumps(error_payload(exc))


def error_event(exc: SwitchyardError) -> bytes:
    return named_event(b"error", error_body(exc))
