"""The gateway's one exception tree and its one rendering, the OpenAI error shape.

    SwitchyardError                       status  type
    ├── BadRequest                          400   invalid_request_error
    │   ├── UnknownModel                    404   invalid_request_error (code model_not_found)
    │   ├── NotFound                        404   invalid_request_error (code not_found)
    │   ├── MethodNotAllowed                405   invalid_request_error (Allow)
    │   └── PayloadTooLarge                 413   invalid_request_error
    ├── AuthenticationFailed                401   authentication_error
    ├── PermissionDenied                    403   permission_error
    ├── AdmissionError
    │   ├── RateLimited                     429   rate_limit_error     (Retry-After)
    │   └── Overloaded                      503   overloaded_error     (Retry-After; also draining)
    └── UpstreamError                       502   upstream_error
        ├── UpstreamTimeout                 504   timeout_error
        │   └── StreamStalled               504   timeout_error        (a gap mid-stream)
        ├── UpstreamStatus                  the upstream's 4xx/429, else 502
        └── NoBackendAvailable              503   overloaded_error     (Retry-After)

Code raises these; `render_error` is the one place that turns them into an HTTP response (the
edge, the relay's writer and FastAPI's handlers all use it). After the first byte of a stream
has gone out, the writer sends `error_event` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.types import Send

__all__ = [
    "AdmissionError",
    "AuthenticationFailed",
    "BadRequest",
    "MethodNotAllowed",
    "NoBackendAvailable",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "StreamStalled",
    "SwitchyardError",
    "UnknownModel",
    "UpstreamError",
    "UpstreamStatus",
    "UpstreamTimeout",
    "error_event",
    "render_error",
    "send_error",
]


class SwitchyardError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None
    retryable = False  # whether another attempt (or backend) may help

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(SwitchyardError):
    status = 400
    type = "invalid_request_error"


class UnknownModel(BadRequest):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]):
        listed = ", ".join(sorted(available)) or "none"
        super().__init__(f"The model '{model}' does not exist. Models available: {listed}.", param="model")


class NotFound(BadRequest):
    """A stored object (a response, an admin key) that does not exist, or belongs to another tenant."""

    status = 404
    code = "not_found"


class MethodNotAllowed(BadRequest):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: list[str]):
        super().__init__(f"Method {method} is not allowed on {path}.", headers={"allow": ", ".join(allowed)})


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class AuthenticationFailed(SwitchyardError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(SwitchyardError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class AdmissionError(SwitchyardError):
    """Refused before any upstream work: the client should retry later."""

    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str] | None = None, **kw: Any):
        merged = {"retry-after": str(max(1, round(retry_after + 0.499))), **(headers or {})}
        super().__init__(message, headers=merged, **kw)
        self.retry_after = retry_after


class RateLimited(AdmissionError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Overloaded(AdmissionError):
    status = 503
    type = "overloaded_error"
    code = "overloaded"


class UpstreamError(SwitchyardError):
    """The backend failed us; `retryable` says whether another attempt (or backend) may help."""

    status = 502
    type = "upstream_error"
    code: str | None = "bad_gateway"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class StreamStalled(UpstreamTimeout):
    """A committed stream went quiet for longer than `relay.stall_timeout`."""


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status before any body reached the client."""

    def __init__(self, upstream_status: int, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.retryable = upstream_status == 429 or upstream_status >= 500
        if upstream_status == 429:
            self.status, self.type, self.code = 429, "rate_limit_error", "upstream_rate_limited"
            if retry_after is not None:
                self.headers["retry-after"] = str(max(1, round(retry_after)))
        elif 400 <= upstream_status < 500 and upstream_status not in (401, 403, 407):
            # The client's request was wrong in a way only the upstream could tell: pass the status on.
            self.status, self.type, self.code = upstream_status, "invalid_request_error", None


class NoBackendAvailable(UpstreamError):
    status = 503
    type = "overloaded_error"
    code = "no_backend_available"

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message, headers={"retry-after": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


def render_error(
    exc: SwitchyardError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the HTTP response that reports `exc`."""
    headers = [(b"content-type", b"application/json"), *extra_headers]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
    return exc.status, headers, orjson.dumps(exc.to_dict())


async def send_error(send: Send, exc: SwitchyardError, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Write `exc` as a whole ASGI response."""
    status, headers, body = render_error(exc, extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_event(exc: SwitchyardError) -> bytes:
    """A mid-stream failure as one SSE event; the openai SDK raises it as `APIError`."""
    return b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"
