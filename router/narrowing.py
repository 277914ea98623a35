"""What the router decided for one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from router.embedder import Vectors
from router.narrow import Band

__all__ = ["Narrowing", "Reason"]

# few_tools, disabled: not scored. narrowed, shadow: scored. The rest pass the full list (`fallback`).
Reason = Literal["few_tools", "disabled", "narrowed", "shadow", "low_confidence", "no_intent", "embedding", "warming"]


@dataclass(frozen=True, slots=True)
class Narrowing:
    """`tools` is what to send upstream: the request's own dicts, untouched, in their original order.

    On a shadow request `tools` is the full list (so the model's choice is not biased by the router)
    while `kept` still names what the router would have kept; `observe()` then records whether the
    tool the model called was among them.
    """

    tools: list[dict[str, Any]]
    tools_in: int
    tools_out: int
    confidence: float  # the best tool's score (0 when not scored)
    band: Band | None  # None when not scored
    fallback: bool  # scored, or meant to be, but the full list passes
    narrowed: bool  # fewer tools go upstream than came in
    shadow: bool
    catalogue: str | None  # id of the tool catalogue (None when not scored)
    reason: Reason
    kept: frozenset[str] = frozenset()
    names: tuple[str | None, ...] = field(default=(), repr=False)
    vector: Vectors | None = field(default=None, repr=False, compare=False)
    words: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the intent's lexical words

    @property
    def header(self) -> str:
        """The `x-switchyard-tools` value: `<in>-><out>`."""
        return f"{self.tools_in}->{self.tools_out}"
