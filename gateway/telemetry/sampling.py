"""Head sampling, configured as the OpenTelemetry SDK reads it: `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG`.

    always_on | always_off | traceidratio | parentbased_always_on (default) |
    parentbased_always_off | parentbased_traceidratio

`traceidratio` keeps a trace when the low 64 bits of its id fall under the ratio's bound, the
SDK's rule, so every service that samples by ratio keeps the same traces. The `parentbased_`
forms follow the caller's sampled flag when there is a caller.
"""

from __future__ import annotations

from gateway.telemetry.propagation import Parent

__all__ = ["SAMPLERS", "Sampler"]

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_LOW_64 = (1 << 64) - 1


class Sampler:
    __slots__ = ("_bound", "_parent_based", "name", "ratio")

    def __init__(self, name: str = "parentbased_always_on", ratio: float = 1.0):
        if name not in SAMPLERS:
            raise ValueError(f"OTEL_TRACES_SAMPLER: unknown sampler {name!r} (one of {', '.join(SAMPLERS)})")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: the ratio must be in [0, 1], got {ratio}")
        self.name, self.ratio = name, ratio
        self._parent_based = name.startswith("parentbased_")
        base = name.removeprefix("parentbased_")
        # A trace is kept when its id's low 64 bits are under the bound: all on is 2**64, all off 0.
        self._bound = {"always_on": 1 << 64, "always_off": 0}.get(base, round(ratio * (1 << 64)))

    def decide(self, trace_id: int, parent: Parent | None) -> bool:
        """Whether this request's spans are recorded."""
        if parent is not None and self._parent_based:
            return parent.sampled
        return (trace_id & _LOW_64) < self._bound

    def __repr__(self) -> str:
        return f"Sampler({self.name!r}, {self.ratio})"
