"""What a request costs: a price table (data) applied to OpenAI-shaped usage.

Costs are integers in micro-dollars (1e-6 USD), computed from integer pico-dollar prices per
token, so that sums of many rows are exact and budgets compare without float drift; they are
shown as USD with six decimals.
"""

from __future__ import annotations

import fnmatch
from importlib import resources
from typing import Any

import msgspec
import yaml

from .schema import Usage

MICRO = 1_000_000


class Price(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # default: the input price
    cache_write: float | None = None  # default: the input price


def builtin_prices() -> dict[str, Any]:
    text = resources.files("chatgate").joinpath("prices.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)["prices"]
    assert isinstance(data, dict)
    return data


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices
        self._cache: dict[str, Price | None] = {}

    def find(self, model: str) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        found = self._prices.get(model)
        if found is None:
            for pattern, price in self._prices.items():
                if fnmatch.fnmatchcase(model, pattern):
                    found = price
                    break
        self._cache[model] = found
        return found

    def cost_micros(self, model: str, usage: Usage | None) -> int | None:
        """Cost in micro-USD; None when the model has no price (never guessed)."""
        if usage is None:
            return 0
        price = self.find(model)
        if price is None:
            return None
        return cost_micros(price, usage)

    def worst_case_micros(self, model: str, prompt_tokens: int, max_output: int) -> int | None:
        """The most a request can cost: every prompt token at the full input price and the
        whole output allowance at the output price (what a budget reserves)."""
        price = self.find(model)
        if price is None:
            return None
        input_pico = max(_pico(price.input, price.input), _pico(price.cache_write, 0.0))
        pico = prompt_tokens * input_pico + max_output * _pico(price.output, price.output)
        return -(-pico // MICRO)


def _pico(usd_per_million: float | None, default: float) -> int:
    """USD per million tokens -> pico-USD per token, as an exact integer."""
    return round((default if usd_per_million is None else usd_per_million) * MICRO)


def cost_micros(price: Price, usage: Usage) -> int:
    """Integer arithmetic throughout: pico-USD per token times tokens, rounded up to whole
    micro-USD once at the end."""
    cached = usage.cached_tokens or 0
    written = usage.cache_write_tokens or 0
    fresh = max(0, usage.prompt_tokens - cached - written)
    pico = (
        fresh * _pico(price.input, price.input)
        + cached * _pico(price.cached_input, price.input)
        + written * _pico(price.cache_write, price.input)
        + usage.completion_tokens * _pico(price.output, price.output)
    )
    return -(-pico // MICRO)


def usd(micros: int | None) -> str:
    return "" if micros is None else f"{micros / MICRO:.6f}"
