"""Telemetry configuration: the gateway's own settings sections, and the OpenTelemetry environment.

Where spans go is configured the ecosystem's way, from the standard variables, so that a platform
team's usual injection (an operator, a Helm chart, a compose file) works unchanged:

- `OTEL_SDK_DISABLED=true`: no tracing at all.
- `OTEL_TRACES_EXPORTER`: `otlp`, `console` or `none` (several: comma-separated). Unset: `otlp`
  when an OTLP endpoint variable is set, else tracing stays off.
- `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full URL spans are posted to; else
  `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL, default `http://localhost:4318`) plus
  `/v1/traces`.
- `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` only; `grpc` and `http/json` are refused
  at start-up, naming the variable (point the gateway at the collector's HTTP port instead).
- `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `_CERTIFICATE`: read by the
  SDK's OTLP exporter itself.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (service name `switchyard` by default).
- `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: head sampling (`gateway/telemetry/sampling.py`).
- `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: the
  export queue (spans waiting at most, milliseconds between exports, spans per export).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from gateway.telemetry.sampling import Sampler

__all__ = ["RequestLogSettings", "TracingConfig", "TracingSettings", "tracing_config"]

_EXPORTERS = ("otlp", "console", "none")
_DEFAULT_ENDPOINT = "http://localhost:4318"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TracingSettings(_Section):
    """What the OpenTelemetry variables do not cover (those say whether and where spans go)."""

    record_content: bool = Field(
        False, description="put prompts and completions on spans (redacted of keys); off: never"
    )


class RequestLogSettings(_Section):
    enabled: bool = Field(False, description="write one JSON line per request")
    sample_rate: float = Field(1.0, ge=0, le=1, description="share of requests that get a line")
    path: str = Field("-", description="`-` for standard output, or a file to append to")
    record_content: bool = Field(False, description="include the prompt and the completion (redacted of keys)")
    queue_size: int = Field(10_000, ge=1, description="lines waiting to be written at most; more are dropped")


@dataclass(frozen=True)
class TracingConfig:
    """Where spans go and how many are kept (picklable: the export process gets a copy)."""

    exporters: tuple[str, ...] = ()
    endpoint: str = _DEFAULT_ENDPOINT + "/v1/traces"
    service_name: str = "switchyard"
    sampler: Sampler = field(default_factory=Sampler)
    max_queue: int = 2048
    schedule_delay_s: float = 5.0
    max_batch: int = 512

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name}: must be positive, got {value}")
    return value


def tracing_config(environ: Mapping[str, str]) -> TracingConfig:
    """Read the OpenTelemetry variables; `ValueError` naming the variable when one is unusable."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingConfig()
    traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    else:
        names = ("otlp",) if traces_endpoint or base_endpoint else ()
    for name in names:
        if name not in _EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not supported (one of {', '.join(_EXPORTERS)})")
    exporters = tuple(n for n in names if n != "none")
    if "otlp" in exporters:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(var, "").strip().lower()
            if protocol and protocol != "http/protobuf":
                raise ValueError(
                    f"{var}: {protocol!r} is not supported; Switchyard exports OTLP over HTTP with protobuf "
                    "(set http/protobuf and the collector's HTTP port, 4318 by default)"
                )
            if protocol:
                break
    endpoint = traces_endpoint or (base_endpoint or _DEFAULT_ENDPOINT).rstrip("/") + "/v1/traces"
    sampler_name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(arg) if arg else 1.0
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: expected a number in [0, 1], got {arg!r}") from None
    max_queue = _positive_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    return TracingConfig(
        exporters=exporters,
        endpoint=endpoint,
        service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or "switchyard",
        sampler=Sampler(sampler_name, ratio if "traceidratio" in sampler_name else 1.0),
        max_queue=max_queue,
        schedule_delay_s=_positive_int(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        max_batch=min(max_queue, _positive_int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
    )
