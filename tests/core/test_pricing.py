"""Pricing: exact Decimal money, per token class, tiers as a cliff, and never a silent zero.

Every expected cost is Σ tokens × rate ÷ 1,000,000 worked out by hand from the case's fixture rates
(cases/README.md "Prices"); the figures equal the cases' ``expected.cost_usd``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenward.core.dialects import usage_from
from tokenward.core.pricing import Cost, Price, Tiered, price_usage, reservation_rates
from tokenward.core.usage import Usage

D = Decimal


def row(**rates: Any) -> Price:
    """An override-style price row (no inheritance between classes), rates in USD per 1M."""
    fees = rates.pop("fees", {})
    return Price(
        model="fixture",
        source="override",
        version="test",
        rates={k: v if isinstance(v, Tiered) else D(v) for k, v in rates.items()},
        fees={k: D(v) for k, v in fees.items()},
    )


def assert_consistent(cost: Cost) -> None:
    assert cost.total_usd is not None
    assert isinstance(cost.total_usd, Decimal)
    assert sum(cost.breakdown.values(), D(0)) == cost.total_usd
    for value in cost.breakdown.values():
        assert isinstance(value, Decimal)


SONNET = {"input": "3", "cache_write": "3.75", "cache_read": "0.30", "output": "15"}


@pytest.mark.parametrize(
    ("case", "dialect", "raw", "rates", "expected"),
    [
        (
            "C01",
            "openai-chat",
            {
                "prompt_tokens": 17903,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 17817},
            },
            {"input": "2.50", "cache_read": "1.25", "output": "10.00"},
            "0.02748625",  # 86*2.50 + 17817*1.25 + 500*10 = 27486.25 per 1M
        ),
        (
            "C03",
            "anthropic-messages",
            {
                "input_tokens": 1200,
                "cache_creation_input_tokens": 300,
                "cache_read_input_tokens": 500,
                "output_tokens": 100,
            },
            SONNET,
            "0.006375",  # 1200*3 + 300*3.75 + 500*0.30 + 100*15 = 6375
        ),
        (
            "C04",
            "anthropic-messages",
            {
                "input_tokens": 50,
                "cache_creation_input_tokens": 10000,
                "cache_read_input_tokens": 40000,
                "output_tokens": 800,
            },
            SONNET,
            "0.06165",  # 150 + 37500 + 12000 + 12000 = 61650
        ),
        (
            "C06",
            "anthropic-messages",
            {
                "input_tokens": 5,
                "cache_creation_input_tokens": 4735,
                "cache_read_input_tokens": 0,
                "output_tokens": 255,
            },
            SONNET,
            "0.02159625",  # 15 + 17756.25 + 3825 = 21596.25
        ),
        (
            "C07",
            "openai-chat",
            {
                "prompt_tokens": 17,
                "completion_tokens": 482,
                "completion_tokens_details": {"reasoning_tokens": 448},
            },
            {"input": "0.05", "output": "0.40"},
            "0.00019365",  # 17*0.05 + 482*0.40 = 193.65 (the visible answer is paid too)
        ),
        (
            "C08",
            "openai-chat",
            {
                "prompt_tokens": 2008,
                "completion_tokens": 266,
                "total_tokens": 2274,
                "completion_tokens_details": {"reasoning_tokens": 261},
            },
            {"input": "1.10", "output": "4.40"},
            "0.0033792",  # 2008*1.10 + 266*4.40 = 3379.2
        ),
        (
            "C32",
            "openai-compatible",
            {
                "prompt_tokens": 12000,
                "completion_tokens": 800,
                "total_tokens": 12800,
                "prompt_tokens_details": {"cached_tokens": 10000},
                "cost": 0,
            },
            {"input": "3", "cache_read": "0.30", "output": "15"},
            "0.021",  # 2000*3 + 10000*0.30 + 800*15 = 21000; the provider's "cost": 0 is ignored
        ),
    ],
)
def test_worked_cases(
    case: str, dialect: str, raw: dict[str, Any], rates: dict[str, str], expected: str
) -> None:
    cost = price_usage(usage_from(dialect, raw), row(**rates))
    assert cost.total_usd == D(expected), case
    assert_consistent(cost)
    assert not cost.estimated
    assert cost.unpriced == ()


def test_c03_breakdown_per_class() -> None:
    usage = usage_from(
        "anthropic-messages",
        {
            "input_tokens": 1200,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 500,
            "output_tokens": 100,
        },
    )
    cost = price_usage(usage, row(**SONNET))
    assert dict(cost.tokens) == {"input": 1200, "cache_read": 500, "cache_write": 300, "output": 100}
    assert dict(cost.breakdown) == {
        "input": D("0.0036"),
        "cache_read": D("0.00015"),
        "cache_write": D("0.001125"),
        "output": D("0.0015"),
    }


def test_money_is_exact_not_float() -> None:
    # 1 token at $0.10/M three times: a float would give 3.0000000000000004e-07.
    cost = price_usage(Usage(input_tokens=3, output_tokens=0), row(input="0.1", output="0.1"))
    assert cost.total_usd == D("0.0000003")
    assert isinstance(cost.total_usd, Decimal)


# --- tiers --------------------------------------------------------------------------------------

GEMINI_TIERED = {
    "input": Tiered(D(2), ((200000, D(4)),)),
    "output": Tiered(D(12), ((200000, D(18)),)),
}


def test_c15_whole_request_switches_tier_above_threshold() -> None:
    cost = price_usage(Usage(input_tokens=250000, output_tokens=2000), row(**GEMINI_TIERED))
    assert cost.total_usd == D("1.036")  # 250000*4 + 2000*18, not 0.524 at base rates
    assert cost.tier == 200000
    assert_consistent(cost)


def test_c15_exactly_at_threshold_stays_on_base_tier() -> None:
    cost = price_usage(Usage(input_tokens=200000, output_tokens=2000), row(**GEMINI_TIERED))
    assert cost.total_usd == D("0.424")  # 200000*2 + 2000*12
    assert cost.tier is None
    one_more = price_usage(Usage(input_tokens=200001, output_tokens=2000), row(**GEMINI_TIERED))
    assert one_more.total_usd == (200001 * D(4) + 2000 * D(18)) / 1_000_000


def test_c17_tier_basis_is_the_full_prompt() -> None:
    rates = {
        "input": Tiered(D(3), ((200000, D(6)),)),
        "cache_write": Tiered(D("3.75"), ((200000, D("7.50")),)),
        "cache_read": Tiered(D("0.30"), ((200000, D("0.60")),)),
        "output": Tiered(D(15), ((200000, D("22.50")),)),
    }
    usage = usage_from(
        "anthropic-messages",
        {
            "input_tokens": 5000,
            "cache_creation_input_tokens": 150000,
            "cache_read_input_tokens": 60000,
            "output_tokens": 1000,
        },
    )
    assert usage.input_tokens == 215000
    cost = price_usage(usage, row(**rates))
    # 5000*6 + 150000*7.50 + 60000*0.60 + 1000*22.50 = 1,213,500 per 1M
    assert cost.total_usd == D("1.2135")
    assert cost.tier == 200000


def test_c18_flat_row_has_no_premium() -> None:
    usage = usage_from(
        "anthropic-messages",
        {
            "input_tokens": 300000,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 2000,
        },
    )
    cost = price_usage(usage, row(input="5", output="25"))
    assert cost.total_usd == D("1.55")  # 300000*5 + 2000*25
    assert cost.tier is None


def test_several_tiers_pick_the_highest_crossed() -> None:
    rates = {"input": Tiered(D(1), ((100, D(2)), (1000, D(3)))), "output": D(0)}
    for tokens, rate in ((100, 1), (101, 2), (1000, 2), (1001, 3)):
        cost = price_usage(Usage(input_tokens=tokens, output_tokens=0), row(**rates))
        assert cost.total_usd == D(tokens * rate) / 1_000_000


# --- unpriced classes ---------------------------------------------------------------------------


def test_nonzero_class_without_rate_makes_cost_unknown_and_names_it() -> None:
    usage = Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=10)
    cost = price_usage(usage, row(input="1", output="2"))
    assert cost.total_usd is None
    assert cost.unpriced == ("cache_read",)
    assert "input" in cost.breakdown  # the priced parts are still shown


def test_zero_class_without_rate_is_fine() -> None:
    cost = price_usage(
        Usage(input_tokens=1000, cache_read_tokens=0, output_tokens=10), row(input="1", output="2")
    )
    assert cost.total_usd == D("0.00102")


def test_no_price_is_unknown_never_zero() -> None:
    cost = price_usage(Usage(input_tokens=1, output_tokens=1), None)
    assert cost.total_usd is None
    assert cost.unpriced == ("model",)


def test_unknown_counts_make_cost_unknown() -> None:
    cost = price_usage(Usage(output_tokens=10, input_source="none"), row(input="1", output="1"))
    assert cost.total_usd is None
    assert cost.unpriced == ("input_tokens",)
    cost = price_usage(Usage(input_tokens=10, output_source="none"), row(input="1", output="1"))
    assert cost.unpriced == ("output_tokens",)


def test_filled_usage_is_priced_but_labelled_estimated() -> None:
    # C12 variant: prompt unknown, pre-flight estimate 1,500; 0.10/M both ways.
    usage = usage_from("openai-compatible", {"prompt_tokens": 0, "completion_tokens": 42}).filled(
        input_estimate=1500
    )
    cost = price_usage(usage, row(input="0.10", output="0.10"))
    assert cost.total_usd == D("0.0001542")
    assert cost.estimated
    # C13: explicit nulls, estimate 400, 0.15/0.60.
    usage = usage_from("openai-chat", {"prompt_tokens": None, "completion_tokens": 25}).filled(
        input_estimate=400
    )
    cost = price_usage(usage, row(input="0.15", output="0.60"))
    assert cost.total_usd == D("0.000075")
    assert cost.estimated


# --- reasoning and cache-write lifetimes -------------------------------------------------------


def test_reasoning_billed_as_output_without_reasoning_rate() -> None:
    cost = price_usage(
        Usage(input_tokens=100, output_tokens=50, reasoning_tokens=30), row(input="1", output="10")
    )
    assert cost.total_usd == D("0.0006")  # 100*1 + 50*10
    assert dict(cost.tokens)["output"] == 50
    assert "reasoning" not in cost.tokens


def test_reasoning_rate_splits_output() -> None:
    price = row(input="1", output="10", reasoning="20")
    cost = price_usage(Usage(input_tokens=100, output_tokens=50, reasoning_tokens=30), price)
    assert cost.total_usd == D("0.0009")  # 100*1 + 20*10 + 30*20
    assert (cost.tokens["output"], cost.tokens["reasoning"]) == (20, 30)
    assert_consistent(cost)


def test_cache_write_5m_and_1h_rates() -> None:
    usage = usage_from_split(fresh=100, write_5m=1000, write_1h=2000, output=10)
    price = row(input="3", cache_write_5m="3.75", cache_write_1h="6", output="15")
    cost = price_usage(usage, price)
    # 100*3 + 1000*3.75 + 2000*6 + 10*15 = 16200
    assert cost.total_usd == D("0.0162")
    assert (cost.tokens["cache_write_5m"], cost.tokens["cache_write_1h"]) == (1000, 2000)
    assert_consistent(cost)


def test_5m_write_falls_back_to_plain_write_rate_but_1h_does_not() -> None:
    price = row(input="3", cache_write="3.75", output="15")
    only_5m = price_usage(usage_from_split(fresh=0, write_5m=1000, write_1h=0, output=0), price)
    assert only_5m.total_usd == D("0.00375")
    with_1h = price_usage(usage_from_split(fresh=0, write_5m=1000, write_1h=1, output=0), price)
    assert with_1h.total_usd is None
    assert with_1h.unpriced == ("cache_write_1h",)


def test_1h_split_without_total_is_not_billed_negative() -> None:
    # A usage that reports only the 1h part: the 1h tokens are the whole write.
    cost = price_usage(
        Usage(input_tokens=100, output_tokens=0, cache_write_1h_tokens=50),
        row(input="3", cache_write="3.75", cache_write_1h="6", output="15"),
    )
    assert cost.total_usd == D("0.00045")  # 50*3 + 50*6
    assert all(n >= 0 for n in cost.tokens.values())


def usage_from_split(*, fresh: int, write_5m: int, write_1h: int, output: int) -> Usage:
    return usage_from(
        "anthropic-messages",
        {
            "input_tokens": fresh,
            "cache_creation_input_tokens": write_5m + write_1h,
            "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": output,
        },
    )


# --- per-call fees ------------------------------------------------------------------------------


def test_c25_search_fee_only_when_searches_ran() -> None:
    price = row(input="2", output="8", fees={"web_search": "0.035"})
    offered_not_used = price_usage(Usage(input_tokens=20, output_tokens=10, web_search_calls=0), price)
    assert offered_not_used.total_usd == D("0.00012")
    unreported = price_usage(Usage(input_tokens=20, output_tokens=10), price)
    assert unreported.total_usd == D("0.00012")
    searched = price_usage(Usage(input_tokens=20, output_tokens=10, web_search_calls=1), price)
    assert searched.total_usd == D("0.03512")
    assert searched.breakdown["fee:web_search"] == D("0.035")


def test_c25_anthropic_server_search_fee() -> None:
    usage = usage_from(
        "anthropic-messages",
        {"input_tokens": 20000, "output_tokens": 700, "server_tool_use": {"web_search_requests": 3}},
    )
    cost = price_usage(usage, row(input="3", output="15", fees={"web_search": "0.01"}))
    assert cost.total_usd == D("0.1005")  # 0.06 + 0.0105 + 3 * 0.01
    assert_consistent(cost)


def test_searches_without_fee_are_unpriced() -> None:
    cost = price_usage(Usage(input_tokens=1, output_tokens=1, web_search_calls=2), row(input="1", output="1"))
    assert cost.total_usd is None
    assert cost.unpriced == ("fee:web_search",)


# --- reservation rates --------------------------------------------------------------------------


def test_reservation_rates_take_the_worst_case() -> None:
    price = row(
        input="3", cache_write="3.75", cache_write_1h="6", cache_read="0.3", output="15", reasoning="20"
    )
    assert reservation_rates(price, 1000) == (D(3), D(20))
    assert reservation_rates(price, 1000, may_write_cache=True) == (D(6), D(20))


def test_reservation_rates_follow_tiers_and_missing_sides() -> None:
    assert reservation_rates(row(**GEMINI_TIERED), 250000) == (D(4), D(18))
    assert reservation_rates(row(**GEMINI_TIERED), 200000) == (D(2), D(12))
    assert reservation_rates(row(input="1"), 10) == (D(1), None)


# --- properties ---------------------------------------------------------------------------------

_n = st.integers(min_value=0, max_value=10**7)
_rate = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)


@settings(deadline=None)  # shared, noisy machines: no per-example time limit
@given(
    fresh=_n, read=_n, write=_n, answer=_n, reasoning=_n, rates=st.tuples(_rate, _rate, _rate, _rate, _rate)
)
def test_breakdown_sums_to_total_and_matches_hand_formula(
    fresh: int, read: int, write: int, answer: int, reasoning: int, rates: tuple[Decimal, ...]
) -> None:
    r_in, r_read, r_write, r_out, r_reason = rates
    usage = Usage(
        input_tokens=fresh + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        output_tokens=answer + reasoning,
        reasoning_tokens=reasoning,
    )
    price = row(input=r_in, cache_read=r_read, cache_write=r_write, output=r_out, reasoning=r_reason)
    cost = price_usage(usage, price)
    expected = (fresh * r_in + read * r_read + write * r_write + answer * r_out + reasoning * r_reason) / D(
        10**6
    )
    assert cost.total_usd == expected
    assert_consistent(cost)
