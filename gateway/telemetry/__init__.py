"""Traces and the request log: OpenTelemetry spans per pipeline stage and per upstream attempt, W3C
trace context end to end, one JSON line per request.

`gateway/telemetry/telemetry.py` holds the front door (`Telemetry`); the request's own record is
`spans.RequestTrace`. This package's root stays light: the span export process imports it.
"""

SCOPE_NAME = "switchyard"
SCOPE_VERSION = "0.1.0"

__all__ = ["SCOPE_NAME", "SCOPE_VERSION"]
