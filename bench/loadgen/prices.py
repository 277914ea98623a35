"""Cost per request from a price table: USD per million input and output tokens, per model.

Cache hits (`x-switchyard-cache: exact` or `semantic`) cost nothing upstream: the point of a cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.loadgen.record import is_cache_hit

__all__ = ["DEFAULT_PRICES", "Price", "load_prices", "parse_price", "request_cost"]


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


# Illustrative list prices (USD per million tokens); pass --price or --price-table for real ones.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "sim-model": Price(0.15, 0.60),
}


def parse_price(spec: str) -> Price:
    """`"in=0.15,out=0.60"` → Price(0.15, 0.60)."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("in", "out"):
            raise ValueError(f"bad price term {part!r}: use in=USD_PER_MTOK,out=USD_PER_MTOK")
        values[key.strip()] = float(value)
    return Price(values.get("in", 0.0), values.get("out", 0.0))


def load_prices(path: str | Path) -> dict[str, Price]:
    """A YAML/JSON mapping model → {input_per_mtok, output_per_mtok}."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a price table maps model names to prices")
    return {str(model): Price(float(p["input_per_mtok"]), float(p["output_per_mtok"])) for model, p in data.items()}


def request_cost(
    price: Price | None, prompt_tokens: int | None, output_tokens: int | None, cache: str | None
) -> float | None:
    if price is None or (prompt_tokens is None and output_tokens is None):
        return None
    if is_cache_hit(cache):
        return 0.0
    return ((prompt_tokens or 0) * price.input_per_mtok + (output_tokens or 0) * price.output_per_mtok) / 1e6
