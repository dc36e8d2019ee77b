"""PriceBook: the price-override table first, then the pinned genai-prices snapshot.

Override rows are the cases' fixture rows; genai-prices lookups are checked against the providers'
published list prices (OpenAI https://openai.com/api/pricing, Anthropic
https://docs.anthropic.com/en/docs/about-claude/pricing), which the pinned snapshot carries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tokenward.core.pricebook import PriceBook, PriceContext, model_candidates
from tokenward.core.pricing import Tiered, price_usage
from tokenward.core.usage import Usage
from tokenward.errors import ConfigError

D = Decimal


def book(models: dict[str, Any], **top: Any) -> PriceBook:
    return PriceBook({"models": models, **top}, use_genai=False)


def rate(price: Any, key: str, input_tokens: int = 0) -> Decimal | None:
    return price.rate(key, input_tokens)[0]


# --- override rows ------------------------------------------------------------------------------


def test_override_rows_default_to_usd_per_million() -> None:
    prices = book({"fixture-three-dollar-model": {"input": "3", "output": "15"}})
    cost = prices.cost(Usage(input_tokens=1000, output_tokens=0), "fixture-three-dollar-model")
    assert cost.total_usd == D("0.003")  # C20: not 3000
    assert cost.price is not None and cost.price.source == "override"


def test_c20_per_token_row_above_sanity_bound_is_refused() -> None:
    with pytest.raises(ConfigError, match="sanity bound") as info:
        book({"fixture-three-dollar-model": {"unit": "usd_per_token", "input": "3"}})
    assert "fixture-three-dollar-model" in str(info.value)


def test_c20_per_token_row_within_bound_is_converted() -> None:
    prices = book(
        {"fixture-three-dollar-model": {"unit": "usd_per_token", "input": "0.000003", "output": "0"}}
    )
    price = prices.resolve("fixture-three-dollar-model")
    assert price is not None
    assert rate(price, "input") == D(3)
    assert prices.cost(
        Usage(input_tokens=1000, output_tokens=0), "fixture-three-dollar-model"
    ).total_usd == D("0.003")


def test_c20_explicit_usd_per_million_is_accepted() -> None:
    prices = book({"fixture-three-dollar-model": {"unit": "usd_per_million", "input": "3"}})
    price = prices.resolve("fixture-three-dollar-model")
    assert price is not None and rate(price, "input") == D(3)


def test_top_level_unit_applies_to_rows() -> None:
    prices = book({"m": {"input": "0.000001", "output": "0.000002"}}, unit="usd_per_token")
    price = prices.resolve("m")
    assert price is not None
    assert (rate(price, "input"), rate(price, "output")) == (D(1), D(2))
    with pytest.raises(ConfigError):
        book({"m": {"input": "1"}}, unit="usd_per_token")  # 1 USD a token: above the bound


def test_sanity_bound_is_inclusive_at_one_cent_per_token() -> None:
    price = book({"m": {"unit": "usd_per_token", "input": "0.01"}}).resolve("m")
    assert price is not None and rate(price, "input") == D(10000)


@pytest.mark.parametrize(
    "models",
    [
        {"m": {"input": "-1"}},
        {"m": {"input": "abc"}},
        {"m": {"input": True}},
        {"m": {"input": "NaN"}},
        {"m": {"input": "1", "unit": "usd_per_thousand"}},
        {"m": {"input": "1", "inptu": "2"}},
        {"m": "3 dollars"},
        {"m": {"input": "1", "tiers": {"above_input_tokens": 5}}},
        {"m": {"input": "1", "tiers": [{"input": "2"}]}},
        {"m": {"input": "1", "tiers": [{"above_input_tokens": 5, "output": "2"}]}},
        {"m": {"input": "1", "fees": ["web_search"]}},
        {"m": {"input": "20000"}},
    ],
)
def test_malformed_rows_are_config_errors_naming_the_row(models: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        book(models)
    assert "models.m" in str(info.value)


def test_unknown_top_level_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        PriceBook({"model": {}})


def test_tiers_in_override_rows() -> None:
    # C15 row: tier rates replace the base ones for the whole request; unlisted keys keep base.
    prices = book(
        {
            "gemini-3.1-pro": {
                "input": "2",
                "cache_read": "0.2",
                "output": "12",
                "tiers": [{"above_input_tokens": 200000, "input": "4", "output": "18"}],
            }
        }
    )
    price = prices.resolve("gemini-3.1-pro")
    assert price is not None
    assert isinstance(price.rates["input"], Tiered)
    assert prices.cost(Usage(input_tokens=250000, output_tokens=2000), "gemini-3.1-pro").total_usd == D(
        "1.036"
    )
    assert prices.cost(Usage(input_tokens=200000, output_tokens=2000), "gemini-3.1-pro").total_usd == D(
        "0.424"
    )
    assert rate(price, "cache_read", 250000) == D("0.2")


def test_c22_flex_tier_from_the_response() -> None:
    prices = book(
        {
            "gpt-5-nano": {
                "input": "0.05",
                "output": "0.40",
                "service_tiers": {"flex": {"input": "0.025", "output": "0.20"}},
            }
        }
    )
    usage = Usage(input_tokens=1000, output_tokens=4000)
    assert prices.cost(usage, "gpt-5-nano", context=PriceContext(service_tier="flex")).total_usd == D(
        "0.000825"
    )
    assert prices.cost(usage, "gpt-5-nano").total_usd == D("0.00165")


def test_c23_tier_served_wins_over_tier_requested() -> None:
    prices = book(
        {
            "gpt-5": {
                "input": "1.25",
                "output": "10",
                "service_tiers": {"priority": {"input": "2.50", "output": "20"}},
            }
        }
    )
    usage = Usage(input_tokens=1000, output_tokens=500)
    # priority requested, default served: the context carries the served tier only.
    assert prices.cost(usage, "gpt-5", context=PriceContext(service_tier="default")).total_usd == D("0.00625")
    assert prices.cost(usage, "gpt-5", context=PriceContext(service_tier="priority")).total_usd == D("0.0125")


def test_batch_rates() -> None:
    prices = book({"m": {"input": "2", "output": "8", "batch": {"input": "1", "output": "4"}}})
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert prices.cost(usage, "m", context=PriceContext(batch=True)).total_usd == D("0.005")
    assert prices.cost(usage, "m").total_usd == D("0.01")


def test_fees_in_override_rows() -> None:
    prices = book({"gpt-4.1": {"input": "2", "output": "8", "per_call_fees_usd": {"web_search": "0.035"}}})
    usage = Usage(input_tokens=20, output_tokens=10, web_search_calls=1)
    assert prices.cost(usage, "gpt-4.1").total_usd == D("0.03512")  # C25 search-actually-called


def test_override_names_are_case_insensitive() -> None:
    price = book({"My-Model": {"input": "1", "output": "1"}}).resolve("my-model")
    assert price is not None


# --- name resolution ----------------------------------------------------------------------------


def test_c19_resolution_checks() -> None:
    prices = book(
        {
            "claude-haiku-4-5": {"input": "1", "output": "5"},
            "gpt-5.6-terra": {"input": "1.00", "output": "8.00"},
        }
    )
    for model, key in [
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gpt-5.6-terra-2026-01-15", "gpt-5.6-terra"),
    ]:
        price = prices.resolve(model)
        assert price is not None and price.model == key, model
    assert prices.resolve("gpt-5.6-terra-mini") is None
    cost = prices.cost(Usage(input_tokens=1, output_tokens=1), "gpt-5.6-terra-mini")
    assert cost.total_usd is None  # unpriced, never 0
    cost = prices.cost(Usage(input_tokens=30311, output_tokens=8631), "claude-haiku-4-5-20251001")
    assert cost.total_usd == D("0.073466")


def test_exact_row_beats_undated_family() -> None:
    prices = book({"m": {"input": "1", "output": "1"}, "m-2025-01-01": {"input": "2", "output": "2"}})
    price = prices.resolve("m-2025-01-01")
    assert price is not None and price.model == "m-2025-01-01"


def test_model_candidates() -> None:
    assert model_candidates("claude-haiku-4-5-20251001") == ["claude-haiku-4-5-20251001", "claude-haiku-4-5"]
    assert model_candidates("gpt-5.6-terra-2026-01-15") == ["gpt-5.6-terra-2026-01-15", "gpt-5.6-terra"]
    assert model_candidates("claude-sonnet-4-5@20250929") == [
        "claude-sonnet-4-5@20250929",
        "claude-sonnet-4-5",
    ]
    assert model_candidates("gpt-5.6-terra-mini") == ["gpt-5.6-terra-mini"]
    assert model_candidates("google/gemini-3-pro-preview") == [
        "google/gemini-3-pro-preview",
        "gemini-3-pro-preview",
    ]
    assert model_candidates("@google/gemini-3-pro-preview") == [
        "@google/gemini-3-pro-preview",
        "gemini-3-pro-preview",
    ]
    assert model_candidates("openrouter/google/gemini-3-pro-preview") == [
        "openrouter/google/gemini-3-pro-preview",
        "gemini-3-pro-preview",
    ]
    # only a trailing date goes; a date-like middle part or a version number stays
    assert model_candidates("gpt-4o-2024-08-06-custom") == ["gpt-4o-2024-08-06-custom"]
    assert model_candidates("gemini-2.0-flash-001") == ["gemini-2.0-flash-001"]


@pytest.mark.parametrize(
    "model",
    ["google/gemini-3-pro-preview", "@google/gemini-3-pro-preview", "openrouter/google/gemini-3-pro-preview"],
)
def test_provider_prefixes_reach_the_override_row(model: str) -> None:
    price = book({"gemini-3-pro-preview": {"input": "2", "output": "12"}}).resolve(model)
    assert price is not None and price.model == "gemini-3-pro-preview"


def test_unknown_model_is_none_never_a_zero_price() -> None:
    assert book({}).resolve("fixture-unknown-model") is None
    assert PriceBook.default().resolve("fixture-unknown-model-x") is None
    assert (
        PriceBook.default().cost(Usage(input_tokens=1, output_tokens=1), "fixture-unknown-model-x").total_usd
        is None
    )


def test_override_wins_over_genai_prices() -> None:
    prices = PriceBook({"models": {"gpt-4o": {"input": "99", "output": "99"}}})
    price = prices.resolve("gpt-4o-2024-08-06")
    assert price is not None and price.source == "override" and rate(price, "input") == D(99)


def test_version_is_a_digest_of_the_overrides() -> None:
    one = book({"m": {"input": "1"}})
    assert one.version and one.version == book({"m": {"input": "1"}}).version
    assert one.version != book({"m": {"input": "2"}}).version
    assert PriceBook({}, version="v7").version == "v7"


# --- genai-prices: published list prices --------------------------------------------------------

# genai-prices 0.2.3 dates its service-tier and batch variants from 2026-10-12/14: price after that.
AT = PriceContext(at=datetime(2026, 11, 1, tzinfo=UTC))


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-2024-08-06", "openai/gpt-4o"])
def test_genai_gpt_4o_list_price(model: str) -> None:
    price = PriceBook.default().resolve(model, context=AT)
    assert price is not None and price.source == "genai-prices"
    assert (rate(price, "input"), rate(price, "output"), rate(price, "cache_read")) == (
        D("2.5"),
        D(10),
        D("1.25"),
    )
    cost = PriceBook.default().cost(
        Usage(input_tokens=17903, cache_read_tokens=17817, output_tokens=500), model, context=AT
    )
    assert cost.total_usd == D("0.02748625")  # C01 at gpt-4o's list prices


def test_genai_claude_sonnet_4_5_list_price_and_cache_lifetimes() -> None:
    # Anthropic: $3 in, $15 out, 5-minute write $3.75 (1.25x), 1-hour write $6 (2x), read $0.30;
    # above 200k prompt tokens the whole request is billed at $6 / $22.50.
    price = PriceBook.default().resolve("claude-sonnet-4-5-20250929", context=AT)
    assert price is not None and price.provider == "anthropic"
    assert rate(price, "input") == D(3)
    assert rate(price, "output") == D(15)
    assert rate(price, "cache_write_5m") == D("3.75")
    assert rate(price, "cache_write_1h") == D(6)
    assert rate(price, "cache_read") == D("0.3")
    assert rate(price, "input", 200001) == D(6)
    assert rate(price, "output", 200001) == D("22.5")


def test_genai_claude_haiku_4_5() -> None:
    price = PriceBook.default().resolve("claude-haiku-4-5-20251001", context=AT)
    assert price is not None
    assert (rate(price, "input"), rate(price, "output")) == (D(1), D(5))


@pytest.mark.parametrize(
    "model",
    ["google/gemini-3-pro-preview", "@google/gemini-3-pro-preview", "openrouter/google/gemini-3-pro-preview"],
)
def test_genai_gemini_3_pro_preview_through_prefixes(model: str) -> None:
    # Google: $2 / $12 up to 200k prompt tokens, $4 / $18 above.
    price = PriceBook.default().resolve(model, context=AT)
    assert price is not None and price.provider == "google"
    assert (rate(price, "input"), rate(price, "output")) == (D(2), D(12))
    assert (rate(price, "input", 250000), rate(price, "output", 250000)) == (D(4), D(18))


def test_genai_service_tier_from_the_response() -> None:
    # OpenAI flex processing halves gpt-5-nano: $0.025 / $0.20 per 1M (standard $0.05 / $0.40).
    prices = PriceBook.default()
    usage = Usage(input_tokens=1000, output_tokens=4000)
    flex = prices.cost(usage, "gpt-5-nano", context=PriceContext(service_tier="flex", at=AT.at))
    default = prices.cost(usage, "gpt-5-nano", context=PriceContext(service_tier="default", at=AT.at))
    assert flex.total_usd == D("0.000825")
    assert default.total_usd == D("0.00165")


def test_genai_batch_halves_gpt_4o() -> None:
    price = PriceBook.default().resolve("gpt-4o", context=PriceContext(batch=True, at=AT.at))
    assert price is not None
    assert (rate(price, "input"), rate(price, "output")) == (D("1.25"), D(5))


def test_genai_rows_inherit_missing_rates_but_never_price_a_cache_write_as_input() -> None:
    # genai-prices rows leave a rate out when it equals the parent class (reasoning -> output), but
    # a cache write is never the input rate: GPT-5.6 bills it at 1.25x input, and a row without a
    # write rate (gpt-4o, written before writes were billed) cannot price one.
    price = PriceBook.default().resolve("gpt-4o", context=AT)
    assert price is not None and price.inherit
    assert rate(price, "reasoning") == D(10)
    assert rate(price, "cache_write") is None
    cost = price_usage(Usage(input_tokens=2000, cache_write_tokens=1500, output_tokens=1), price)
    assert cost.total_usd is None and cost.unpriced == ("cache_write",)


def test_resolve_is_cached_per_context() -> None:
    prices = PriceBook.default()
    first = prices.resolve("gpt-4o", context=AT)
    assert prices.resolve("gpt-4o", context=AT) is first
    assert prices.resolve("gpt-4o", context=PriceContext(batch=True, at=AT.at)) is not first
