"""What a request costs in money: the price table, a request's worst case, and its real cost.

The worst case is what admission reserves against budgets: every prompt token at the full input
price (the prompt estimate is an upper bound, see `estimate_tokens`) and every output token the
request may produce. The real cost, settled when the request ends, uses the upstream's usage and
charges cached prompt tokens at the cached-input price.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import SpendSettings

__all__ = ["Price", "PriceTable"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token."""

    input: float
    output: float
    cached_input: float

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(max(0, cached_tokens), max(0, prompt_tokens))
        return (prompt_tokens - cached) * self.input + cached * self.cached_input + completion_tokens * self.output


class PriceTable:
    def __init__(self, settings: SpendSettings):
        scale = 1e-6 if settings.price_unit == "per_million" else 1.0
        self._prices = {
            model: Price(
                p.input * scale,
                p.output * scale,
                (p.cached_input if p.cached_input is not None else p.input) * scale,
            )
            for model, p in settings.prices.items()
        }

    def get(self, model: str) -> Price | None:
        return self._prices.get(model)

    def __contains__(self, model: str) -> bool:
        return model in self._prices
