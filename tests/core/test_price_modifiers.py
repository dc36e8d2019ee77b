"""The provider facts of late 2026, in the pure core: OpenAI cache writes, Anthropic fast mode and
US-only inference, cache writes without their lifetime split, Gemini grounding fees, the holds for
all of them, and one name per model.

Every expected figure is a Decimal literal worked out by hand (Σ tokens × rate ÷ 1,000,000, the
arithmetic in the comment next to it) from fixture rates; the facts behind each rule are cited in
``docs/accounting.md`` (read 2026-12-07).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.support.provider_facts import (
    CHAT_USAGE,
    N04_FAST_US_USD,
    N04_FAST_USD,
    N04_STANDARD_USD,
    N04_USAGE,
    OPUS,
    RESPONSES_USAGE,
    TERRA,
    UNSPLIT,
    WRITES_AS_INPUT_USD,
    WRITES_USD,
)
from tokenward.core.accounting import account
from tokenward.core.dialects import response_facts, stream_facts, stream_reader, usage_facts, usage_from
from tokenward.core.modifiers import (
    RequestFacts,
    billable_searches,
    builtin_geo_multiplier,
    cache_ttl,
    claude_version,
)
from tokenward.core.pricebook import PriceBook, PriceContext, canonical_model, hold_rates
from tokenward.errors import ConfigError, ValidationError

D = Decimal
AT = datetime(2026, 12, 7, 12, tzinfo=UTC)

# --- 1. OpenAI cache writes ------------------------------------------------------------------------


def book(**models: dict[str, Any]) -> PriceBook:
    return PriceBook({"models": models}, use_genai=False)


@pytest.mark.parametrize(
    ("dialect", "raw"), [("openai-chat", CHAT_USAGE), ("openai-responses", RESPONSES_USAGE)]
)
def test_openai_cache_writes_are_read_and_priced_at_the_write_rate(dialect: str, raw: dict[str, Any]) -> None:
    usage = usage_from(dialect, raw)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (10000, 2000, 6000)
    cost = account(usage, model="gpt-5.6-terra", prices=book(**{"gpt-5.6-terra": TERRA})).cost
    assert cost.total_usd == WRITES_USD != WRITES_AS_INPUT_USD
    assert cost.breakdown["cache_write"] == D("0.01875") and not cost.estimated


def test_openai_cache_writes_in_streams() -> None:
    chat = stream_reader("openai-chat")
    chat.feed({"id": "c", "model": "gpt-5.6-terra", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
    chat.feed({"id": "c", "model": "gpt-5.6-terra", "choices": [], "usage": CHAT_USAGE})
    responses = stream_reader("openai-responses")
    responses.feed({"type": "response.output_text.delta", "delta": "hi"})
    responses.feed(
        {
            "type": "response.completed",
            "response": {
                "id": "r",
                "model": "gpt-5.6-terra",
                "status": "completed",
                "usage": RESPONSES_USAGE,
            },
        }
    )
    prices = book(**{"gpt-5.6-terra": TERRA})
    for reader in (chat, responses):
        facts = stream_facts(reader)
        assert facts.usage is not None and facts.usage.cache_write_tokens == 6000
        assert account(facts.usage, model="gpt-5.6-terra", prices=prices).cost.total_usd == WRITES_USD


def test_an_unknown_write_rate_leaves_the_write_unpriced_never_input_or_zero() -> None:
    no_write_rate = {"input": "2.50", "cache_read": "0.25", "output": "15"}
    cost = account(
        usage_from("openai-chat", CHAT_USAGE),
        model="gpt-5.6-terra",
        prices=book(**{"gpt-5.6-terra": no_write_rate}),
    ).cost
    assert cost.total_usd is None and cost.unpriced == ("cache_write",)
    # the other classes are still priced, for the breakdown: 5000 + 500 + 7500 per 1M
    assert sum(cost.breakdown.values()) == D("0.013")


def test_openai_cache_writes_with_the_pinned_gpt_5_6_row() -> None:
    # genai-prices 0.2.3, gpt-5.6-terra from 2026-07-30: input 2, cache read 0.2, cache write 2.5
    # (1.25x), output 12. 2000 x 2 + 2000 x 0.2 + 6000 x 2.5 + 500 x 12
    # = 4000 + 400 + 15000 + 6000 = 25400 per 1M
    cost = account(
        usage_from("openai-responses", RESPONSES_USAGE),
        model="gpt-5.6-terra",
        prices=PriceBook.default(),
        provider="openai",
        context=PriceContext(at=AT),
    ).cost
    assert cost.total_usd == D("0.0254")


# --- 2. Anthropic speed and inference geography ----------------------------------------------------


def cost_of(
    raw: dict[str, Any], prices: PriceBook, model: str = "claude-opus-4-8", ttl: str | None = None
) -> Any:
    facts = usage_facts("anthropic-messages", raw)
    context = PriceContext(
        service_tier=facts.service_tier,
        speed=facts.speed,
        inference_geo=facts.inference_geo,
        cache_write_ttl=ttl,
        at=AT,
    )
    return account(facts.usage, model=model, prices=prices, provider="anthropic", context=context).cost


def test_fast_mode_is_priced_at_its_own_rates_with_the_cache_multipliers_on_top() -> None:
    cost = cost_of(N04_USAGE, book(**{"claude-opus-4-8": OPUS}))
    assert cost.total_usd == N04_FAST_USD and cost.price.modifiers == {"speed": "fast"}
    assert (
        cost_of({**N04_USAGE, "speed": "standard"}, book(**{"claude-opus-4-8": OPUS})).total_usd
        == N04_STANDARD_USD
    )


def test_fast_mode_from_the_pinned_table() -> None:
    # genai-prices' claude-opus-4-8 has a speed=fast variant with the same rates as N04's fixture
    assert cost_of(N04_USAGE, PriceBook.default()).total_usd == N04_FAST_USD


def test_fast_mode_on_a_row_without_fast_rates_is_unpriced_never_standard() -> None:
    plain_row = {k: v for k, v in OPUS.items() if k != "speed"}
    cost = cost_of(N04_USAGE, book(**{"claude-opus-4-8": plain_row}))
    assert cost.total_usd is None and "speed:fast" in cost.unpriced
    assert cost.breakdown == {}  # no standard-rate figures passed off as a partial fast cost
    # genai-prices has no fast rates for Opus 4.7 either
    assert "speed:fast" in cost_of(N04_USAGE, PriceBook.default(), model="claude-opus-4-7").unpriced


def test_a_fast_class_the_speed_does_not_list_is_unpriced() -> None:
    partial = {**OPUS, "speed": {"fast": {"input": "10", "output": "50"}}}
    cost = cost_of(N04_USAGE, book(**{"claude-opus-4-8": partial}))
    assert cost.total_usd is None and cost.unpriced == ("cache_write_5m",)


def test_us_only_inference_is_1_1x_on_every_token_class() -> None:
    prices = book(**{"claude-opus-4-8": OPUS})
    # standard x 1.1: 12 x 5.5 + 44667 x 6.875 + 850 x 27.5 = 66 + 307085.625 + 23375 = 330526.625
    us_standard = {**N04_USAGE, "speed": "standard", "inference_geo": "us"}
    assert cost_of(us_standard, prices).total_usd == D("0.330526625")
    # fast x 1.1: 12 x 11 + 44667 x 13.75 + 850 x 55 = 132 + 614171.25 + 46750 = 661053.25
    assert cost_of({**N04_USAGE, "inference_geo": "us"}, prices).total_usd == N04_FAST_US_USD
    # a global call is unchanged
    assert cost_of({**N04_USAGE, "inference_geo": "global"}, prices).total_usd == N04_FAST_USD


def test_us_only_inference_before_claude_4_6_is_standard() -> None:
    # the support article: Opus 4.5, Sonnet 4.5, Haiku 4.5 and earlier are billed at the standard rate
    prices = book(**{"claude-sonnet-4-5": {"input": "3", "output": "15"}})
    usage = {"input_tokens": 1000, "output_tokens": 100, "inference_geo": "us"}
    # 1000 x 3 + 100 x 15 = 4500 per 1M
    assert cost_of(usage, prices, model="claude-sonnet-4-5").total_usd == D("0.0045")


def test_a_geo_multiplier_key_in_the_override_file_wins() -> None:
    prices = book(
        **{"fixture-eu-model": {"input": "2", "output": "10", "inference_geo_multiplier": {"eu": "1.25"}}}
    )
    usage = {"input_tokens": 1000, "output_tokens": 100, "inference_geo": "eu"}
    # (1000 x 2 + 100 x 10) x 1.25 = 3000 x 1.25 = 3750 per 1M
    assert cost_of(usage, prices, model="fixture-eu-model").total_usd == D("0.00375")
    # a geography no rule knows is unpriced, never billed at 1x
    unknown = cost_of({**usage, "inference_geo": "us"}, prices, model="fixture-eu-model")
    assert unknown.total_usd is None and unknown.unpriced == ("inference_geo:us",)


def test_service_tier_speed_and_geo_are_read_from_a_bare_usage_object() -> None:
    facts = usage_facts(
        "anthropic-messages", {**N04_USAGE, "service_tier": "priority", "inference_geo": "us"}
    )
    assert (facts.service_tier, facts.speed, facts.inference_geo) == ("priority", "fast", "us")
    whole = response_facts("anthropic-messages", {"type": "message", "model": "m", "usage": N04_USAGE})
    assert (whole.speed, whole.service_tier) == ("fast", "default")


def test_speed_and_geo_in_a_stream_survive_a_delta_that_repeats_them_or_not() -> None:
    reader = stream_reader("anthropic-messages")
    start_usage = {**N04_USAGE, "output_tokens": 1, "inference_geo": "us"}
    reader.feed(
        {"type": "message_start", "message": {"id": "m", "model": "claude-opus-4-8", "usage": start_usage}}
    )
    reader.feed(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 850}}
    )
    facts = stream_facts(reader)
    assert (facts.speed, facts.inference_geo) == ("fast", "us")
    assert facts.usage is not None and facts.usage.output_tokens == 850


def test_override_rows_refuse_malformed_speed_and_geo_keys() -> None:
    with pytest.raises(ConfigError, match=r"speed\.fast: unknown keys \['inptu'\]"):
        book(m={"input": "1", "output": "1", "speed": {"fast": {"inptu": "2"}}})
    with pytest.raises(ConfigError, match="inference_geo_multiplier"):
        book(m={"input": "1", "output": "1", "inference_geo_multiplier": {"us": "0"}})
    with pytest.raises(ConfigError, match="inference_geo_multiplier"):
        book(m={"input": "1", "output": "1", "inference_geo_multiplier": [1.1]})


def test_geo_rules() -> None:
    assert claude_version("claude-opus-4-6") == (4, 6)
    assert claude_version("claude-3-5-sonnet-20241022") == (3, 5)
    assert claude_version("claude-sonnet-4-20250514") == (4, 0)
    assert claude_version("anthropic/claude-haiku-4-5-20251001") == (4, 5)
    assert claude_version("gpt-5") is None
    assert builtin_geo_multiplier("claude-opus-4-6", "us") == D("1.1")
    assert builtin_geo_multiplier("claude-fable-5", "US") == D("1.1")
    assert builtin_geo_multiplier("claude-opus-4-5", "us") == D(1)
    assert builtin_geo_multiplier("gpt-5", "global") == D(1)
    assert builtin_geo_multiplier("gpt-5", "us") is None


# --- 3. Holds at the rates the request asks for --------------------------------------------------


def test_holds_follow_fast_mode_geo_and_cache_writes() -> None:
    prices = book(**{"claude-opus-4-8": OPUS}, **{"gpt-5.6-terra": TERRA})

    def rates(model: str, request: RequestFacts) -> tuple[Any, Any]:
        _, input_rate, output_rate = hold_rates(prices, model, 1000, request)
        return input_rate, output_rate

    assert rates("claude-opus-4-8", RequestFacts()) == (D(5), D(25))
    assert rates("claude-opus-4-8", RequestFacts(speed="fast")) == (D(10), D(50))
    # 5-minute writes only: the 5-minute write rate; a 1-hour marker: the 1-hour one
    assert rates("claude-opus-4-8", RequestFacts(may_write_cache=True, cache_write_ttl="5m")) == (
        D("6.25"),
        D(25),
    )
    assert rates("claude-opus-4-8", RequestFacts(may_write_cache=True, cache_write_ttl="1h")) == (
        D(10),
        D(25),
    )
    fast_1h = RequestFacts(speed="fast", may_write_cache=True, cache_write_ttl="1h")
    assert rates("claude-opus-4-8", fast_1h) == (D(20), D(50))
    # US-only on top: 20 x 1.1 = 22, 50 x 1.1 = 55
    assert rates(
        "claude-opus-4-8",
        RequestFacts(speed="fast", inference_geo="us", may_write_cache=True, cache_write_ttl="1h"),
    ) == (
        D(22),
        D(55),
    )
    # OpenAI: automatic caching may write, at 1.25x input
    assert rates("gpt-5.6-terra", RequestFacts()) == (D("2.50"), D(15))
    assert rates("gpt-5.6-terra", RequestFacts(may_write_cache=True)) == (D("3.125"), D(15))


def test_a_hold_for_a_speed_the_row_cannot_price_is_unpriced() -> None:
    prices = book(**{"claude-opus-4-8": {"input": "5", "output": "25"}})
    price, input_rate, output_rate = hold_rates(prices, "claude-opus-4-8", 10, RequestFacts(speed="fast"))
    assert price is not None and price.unpriced == ("speed:fast",)
    assert (input_rate, output_rate) == (None, None)


# --- 4. Cache writes without the lifetime split --------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "expected", "assumed"),
    [
        # 100 x 5 + 1000 x 10 + 10 x 25 = 500 + 10000 + 250 = 10750 per 1M
        ("1h", D("0.01075"), "cache_write_ttl=1h (requested)"),
        # 100 x 5 + 1000 x 6.25 + 10 x 25 = 500 + 6250 + 250 = 7000 per 1M
        ("5m", D("0.007"), "cache_write_ttl=5m (requested)"),
        (None, D("0.007"), "cache_write_ttl=5m (unknown)"),
    ],
)
def test_unsplit_writes_are_priced_at_the_requested_lifetime_and_marked_estimated(
    ttl: str | None, expected: Decimal, assumed: str
) -> None:
    cost = cost_of(UNSPLIT, book(**{"claude-opus-4-8": OPUS}), ttl=ttl)
    assert cost.total_usd == expected
    assert cost.estimated and cost.assumed == (assumed,)


def test_split_writes_and_single_rate_writes_assume_nothing() -> None:
    split = {**UNSPLIT, "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000}}
    cost = cost_of(split, book(**{"claude-opus-4-8": OPUS}), ttl="5m")
    assert cost.total_usd == D("0.01075") and not cost.estimated and cost.assumed == ()
    openai = account(
        usage_from("openai-chat", CHAT_USAGE), model="gpt-5.6-terra", prices=book(**{"gpt-5.6-terra": TERRA})
    ).cost
    assert openai.assumed == () and not openai.estimated


def test_cache_ttl_values() -> None:
    assert cache_ttl("1H") == "1h"
    with pytest.raises(ValidationError, match="5m, 1h"):
        cache_ttl("30m")


# --- 5. Gemini grounding fees ----------------------------------------------------------------------


def gemini_chunk(queries: list[str], usage: dict[str, int], model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"parts": [{"text": "x"}]}, "groundingMetadata": {"webSearchQueries": queries}}
        ],
        "usageMetadata": usage,
        "modelVersion": model,
    }


@pytest.mark.parametrize(
    ("model", "fee", "expected"),
    [
        # Gemini 3: {"btc", "eth", "sol"} = 3 unique non-empty queries: 100 x 0.5 + 10 x 3 = 80 per 1M
        # = 0.00008, + 3 x 0.014 = 0.042, = 0.04208
        ("gemini-3-flash-preview", "0.014", D("0.04208")),
        # Gemini 2.5: one grounded prompt: 0.00008 + 0.035 = 0.03508
        ("gemini-2.5-flash", "0.035", D("0.03508")),
    ],
)
def test_grounding_queries_are_counted_once_across_stream_chunks(
    model: str, fee: str, expected: Decimal
) -> None:
    reader = stream_reader("gemini")
    reader.feed(gemini_chunk(["btc", "eth"], {"promptTokenCount": 100, "candidatesTokenCount": 2}, model))
    reader.feed(
        gemini_chunk(["eth", "", "sol", " "], {"promptTokenCount": 100, "candidatesTokenCount": 10}, model)
    )
    usage = stream_facts(reader).usage
    assert usage is not None and usage.web_search_calls == 3
    prices = book(**{model: {"input": "0.5", "output": "3", "fees": {"web_search": fee}}})
    cost = account(usage, model=model, prices=prices).cost
    assert cost.total_usd == expected


def test_billable_searches() -> None:
    assert billable_searches("gemini-3-pro-preview", 4) == 4
    assert billable_searches("google/gemini-2.5-pro", 4) == 1
    assert billable_searches("gemini-2.0-flash", 0) == 0
    assert billable_searches("gpt-5", 2) == 2


# --- 7. One name per model -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "gemini-3-pro-preview",
        "google/gemini-3-pro-preview",
        "@google/gemini-3-pro-preview",
        " Gemini-3-Pro-Preview ",
    ],
)
def test_canonical_model_name(name: str) -> None:
    assert canonical_model(name) == "gemini-3-pro-preview"


def test_canonical_model_keeps_a_dated_snapshot_apart() -> None:
    # the price resolution rule tries the dated id first: gpt-4o-2024-05-13 has a price of its own
    assert canonical_model("openai/gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    assert canonical_model("openrouter/google/gemini-3-pro-preview") == "gemini-3-pro-preview"


# -- service tiers a hold is priced at ------------------------------------------------------------


def test_a_hold_takes_the_named_tier_the_configured_tier_or_the_dearest() -> None:
    from tokenward.core.modifiers import RequestFacts

    prices = PriceBook.default()

    # gpt-5 in genai-prices 0.2.3: $1.25/$10 by default, $0.625/$5 flex, $2.50/$20 priority
    def rates(tier: str | None = None, default_tier: str | None = None) -> tuple[Any, Any]:
        request = RequestFacts(service_tier=tier)
        return hold_rates(prices, "gpt-5", 100, request, provider="openai", default_tier=default_tier)[1:]

    assert rates("flex") == (Decimal("0.625"), Decimal(5))
    assert rates("priority") == (Decimal("2.5"), Decimal(20))
    assert rates(default_tier="default") == (Decimal("1.25"), Decimal(10))
    assert rates() == (Decimal("2.5"), Decimal(20))  # omitted or auto: it may be served at priority
    assert rates("default", default_tier="priority") == (Decimal("1.25"), Decimal(10))


def test_override_rows_tiers_count_for_the_dearest() -> None:
    from tokenward.core.modifiers import RequestFacts

    prices = PriceBook(
        {"models": {"m1": {"input": 1, "output": 2, "service_tiers": {"premium": {"input": 3, "output": 4}}}}}
    )
    assert hold_rates(prices, "m1", 10, RequestFacts())[1:] == (Decimal(3), Decimal(4))
    assert hold_rates(prices, "m1", 10, RequestFacts(), default_tier="default")[1:] == (
        Decimal(1),
        Decimal(2),
    )
