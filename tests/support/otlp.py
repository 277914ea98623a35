"""A real OTLP/HTTP receiver for tests: accepts `POST /v1/traces` (protobuf), decodes every span
with `opentelemetry-proto`, and keeps them for the test to look at. Also a collector that is
"down" in the worst way: it accepts connections and never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OTLPReceiver", "SilentCollector", "assert_nowhere", "decode_value", "log_lines"]

Span = dict[str, Any]


def decode_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: decode_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _spans(request: ExportTraceServiceRequest) -> list[Span]:
    out: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: decode_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": {kv.key: decode_value(kv.value) for kv in span.attributes},
                        "events": [
                            {
                                "name": e.name,
                                "time": e.time_unix_nano,
                                "attributes": {kv.key: decode_value(kv.value) for kv in e.attributes},
                            }
                            for e in span.events
                        ],
                        "status": {"code": span.status.code, "message": span.status.message},
                        "trace_state": span.trace_state,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                    }
                )
    return out


class OTLPReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.raw_bodies: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ok = self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf"
                if ok:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    with receiver._lock:
                        receiver.raw_bodies.append(body)
                        receiver.spans.extend(_spans(request))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def wait_for(self, condition: Callable[[list[Span]], bool], timeout: float = 60.0, what: str = "spans") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition(list(self.spans)):
                    return
            time.sleep(0.05)  # polling what the receiver has been sent, bounded by the deadline
        raise AssertionError(f"{what} did not arrive in {timeout:g}s; got {len(self.spans)} spans")

    def wait_for_trace(self, trace_id: str, names: set[str], timeout: float = 60.0) -> list[Span]:
        """The spans of `trace_id`, once every name in `names` is among them."""
        self.wait_for(
            lambda spans: names <= {s["name"] for s in spans if s["trace_id"] == trace_id},
            timeout,
            f"trace {trace_id} with {sorted(names)}",
        )
        return self.trace(trace_id)


class SilentCollector:
    """Listens, lets connections in (the kernel's backlog), and never reads or answers: every
    export to it waits for its whole timeout."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The request log's lines (JSON objects) written so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_nowhere(secrets: Sequence[str], receiver: OTLPReceiver, log_text: str) -> None:
    """None of `secrets` appears in any exported byte, decoded span or request-log line."""
    for secret in secrets:
        for body in receiver.raw_bodies:
            assert secret.encode() not in body
        for span in receiver.spans:
            assert secret not in json.dumps(span), span["name"]
        assert secret not in log_text
