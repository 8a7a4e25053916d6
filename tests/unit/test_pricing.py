"""Costs from the price table, on recorded responses of every protocol (cached and
reasoning tokens included), computed by hand here from the published per-million prices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatgate.config import load
from chatgate.pricing import Price, PriceTable, cost_micros
from chatgate.providers import anthropic, gemini, openai
from chatgate.providers.base import Context
from chatgate.schema import Usage
from tests.support import FIXTURES

CFG = load(None, {})
TABLE = PriceTable(CFG.prices)


def ctx() -> Context:
    return Context(response_id="chatcmpl-c", created=0, public_model="m", include_usage=False)


def test_integer_micro_usd_with_cache_reads_and_writes() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.30, cache_write=3.75)
    u = Usage(
        prompt_tokens=1115,
        completion_tokens=200,
        total_tokens=1315,
        cached_tokens=1000,
        cache_write_tokens=5,
        reasoning_tokens=50,
    )
    # fresh 110 x 3 + cached 1000 x 0.30 + written 5 x 3.75 + out 200 x 15 (reasoning inside)
    assert cost_micros(price, u) == 330 + 300 + 19 + 3000  # 18.75 rounds up once, at the end


def test_exact_sums_no_float_drift() -> None:
    price = Price(input=0.175, output=0.175)
    one = Usage(prompt_tokens=1, completion_tokens=0, total_tokens=1)
    assert cost_micros(price, one) == 1  # 0.175 micro-USD, rounded up
    big = Usage(prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000)
    assert cost_micros(price, big) == 175_000


def test_unknown_model_has_no_price_rather_than_a_guess() -> None:
    assert TABLE.cost_micros("my-local-llama", Usage(prompt_tokens=5, total_tokens=5)) is None


def test_operator_prices_override_the_builtin_table(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("prices:\n  gpt-5.1*: {input: 1, output: 2}\n")
    table = PriceTable(load(p, {}).prices)
    assert (
        table.cost_micros("gpt-5.1", Usage(prompt_tokens=10, completion_tokens=10, total_tokens=20))
        == 30
    )


def _fixture(name: str) -> bytes:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"recorded vendor payloads not present ({FIXTURES}); they live in ../shared")
    return path.read_bytes()


def _hand(m: str, fresh: int, cached: int, written: int, out: int) -> int:
    """Per-million prices of the catalog, written out: micro-USD = tokens x USD/1M."""
    prices = {  # input, cached input, cache write, output
        "gpt-5.1": (1.25, 0.125, 1.25, 10.0),
        "claude-sonnet-4-6": (3.0, 0.30, 3.75, 15.0),
        "gemini-2.5-flash": (0.30, 0.03, 0.30, 2.50),
        "gemini-3-pro-preview": (2.0, 0.20, 2.0, 12.0),
        "gpt-5.3-codex": (1.75, 0.175, 1.75, 14.0),
    }[m]
    pico = sum(
        round(t * p * 1_000_000) for t, p in zip((fresh, cached, written, out), prices, strict=True)
    )
    return -(-pico // 1_000_000)


@pytest.mark.parametrize(
    ("module", "name", "model"),
    [
        (openai, "openai/chat_text.json", "gpt-5.1"),
        (openai, "openai/chat_reasoning.json", "gpt-5.1"),
        (anthropic, "anthropic/message_text.json", "claude-sonnet-4-6"),
        (anthropic, "anthropic/message_thinking_tool_use.json", "claude-sonnet-4-6"),
        (gemini, "gemini/generate_text_thoughts_usage.json", "gemini-2.5-flash"),
        (gemini, "gemini/generate_thinking.json", "gemini-3-pro-preview"),
    ],
)
def test_recorded_responses_cost_what_the_price_table_says(
    module: Any, name: str, model: str
) -> None:
    raw = _fixture(name)
    _, usage = module.parse_response(raw, ctx())
    assert usage is not None
    src = msgspec.json.decode(raw)
    if module is openai:
        u = src["usage"]
        cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        want = _hand(model, u["prompt_tokens"] - cached, cached, 0, u["completion_tokens"])
    elif module is anthropic:
        u = src["usage"]
        want = _hand(
            model,
            u["input_tokens"],
            u["cache_read_input_tokens"],
            u["cache_creation_input_tokens"],
            u["output_tokens"],
        )
    else:
        u = src["usageMetadata"]
        cached = u.get("cachedContentTokenCount", 0)
        out = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
        want = _hand(model, u["promptTokenCount"] - cached, cached, 0, out)
    assert TABLE.cost_micros(model, usage) == want > 0


@pytest.mark.parametrize("name", ["response_text.json", "response_reasoning.json"])
def test_responses_api_usage_costs_what_the_price_table_says(name: str) -> None:
    from chatgate.providers import openai_responses

    raw = (Path(__file__).parents[1] / "fixtures" / "openai_responses" / name).read_bytes()
    _, usage = openai_responses.parse_response(raw, ctx())
    u = msgspec.json.decode(raw)["usage"]
    cached = u["input_tokens_details"]["cached_tokens"]
    want = _hand("gpt-5.3-codex", u["input_tokens"] - cached, cached, 0, u["output_tokens"])
    assert (
        usage is not None
        and usage.reasoning_tokens == u["output_tokens_details"]["reasoning_tokens"]
    )
    assert TABLE.cost_micros("gpt-5.3-codex", usage) == want > 0
