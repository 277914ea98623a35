"""Service-level objectives: `ttft=500ms,tpot=50ms,e2e=2s` parsed, and checked per request."""

from __future__ import annotations

import re

from bench.loadgen.record import RequestRecord

__all__ = ["SLO_METRICS", "meets_slo", "parse_slo"]

SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}  # a bare number means milliseconds


def parse_slo(spec: str) -> dict[str, float]:
    """`"ttft=500ms,tpot=50ms"` → {"ttft": 0.5, "tpot": 0.05} (seconds)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SLO_METRICS:
            raise ValueError(f"bad SLO term {part!r}: use one of {', '.join(SLO_METRICS)} = duration")
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"bad duration {value!r} in SLO term {part!r} (e.g. 500ms, 2s)")
        out[key] = float(m.group(1)) * _UNITS[m.group(2)]
    return out


def meets_slo(rec: RequestRecord, slo: dict[str, float]) -> bool:
    """A request counts toward goodput when it succeeded and met every objective."""
    if rec.error is not None:
        return False
    for key, limit in slo.items():
        if key == "ttft":
            value = rec.ttft if rec.stream else rec.e2e
        elif key == "tpot":
            value = rec.tpot
        elif key == "itl":
            itls = rec.itls
            value = max(itls) if itls else None
        else:
            value = rec.e2e
        if value is not None and value > limit:
            return False
    return True
