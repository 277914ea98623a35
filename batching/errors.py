"""The local engine's exception tree.

    EngineError                 the engine failed a request (worker crashed, engine shut down) → 502
    ├── EngineOverloaded        every worker's queue is full, or no worker is ready → 503 + Retry-After
    └── InvalidRequest          the request cannot be served as asked (names the problem) → 400

Catch the two subclasses before `EngineError`. `InvalidRequest` is also a `ValueError`.
"""

from __future__ import annotations

__all__ = ["EngineError", "EngineOverloaded", "InvalidRequest"]


class EngineError(Exception):
    """The engine could not complete a request."""


class EngineOverloaded(EngineError):
    """No capacity now; the caller should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRequest(EngineError, ValueError):
    """The request is malformed or exceeds a limit; `param` names the offending field when there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param
