"""``account``: fill unknown counts, price, charge; and the usage event's JSON form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from tokenward.core.accounting import account
from tokenward.core.budgets import Subject
from tokenward.core.dialects import usage_from
from tokenward.core.events import UsageEvent
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.usage import Usage

D = Decimal


def book(model: str, **rates: str) -> PriceBook:
    return PriceBook({"models": {model: rates}}, use_genai=False)


def test_c12_unknown_prompt_falls_back_to_the_estimate_and_is_labelled() -> None:
    reported = usage_from(
        "openai-compatible", {"prompt_tokens": 0, "completion_tokens": 42, "total_tokens": 42}
    )
    result = account(
        reported,
        model="llama3.1:8b",
        prices=book("llama3.1:8b", input="0.10", output="0.10"),
        input_estimate=1500,
    )
    assert result.reported.input_tokens is None  # what the provider said stays visible
    assert (result.usage.input_tokens, result.usage.input_source) == (1500, "preflight_estimate")
    assert not result.usage.complete
    assert result.cost.total_usd == D("0.0001542")
    assert result.cost.estimated
    assert result.charged["input_tokens"] == D(1500)
    assert result.charged["total_tokens"] == D(1542)
    assert result.charged["cost_usd"] == D("0.0001542")


def test_c13_nulls_never_raise_or_go_negative() -> None:
    reported = usage_from(
        "openai-chat", {"prompt_tokens": None, "completion_tokens": 25, "total_tokens": None}
    )
    result = account(
        reported,
        model="gpt-4o-mini",
        prices=book("gpt-4o-mini", input="0.15", output="0.60"),
        input_estimate=400,
    )
    assert result.cost.total_usd == D("0.000075")
    assert result.cost.estimated
    assert result.charged["total_tokens"] == D(425)
    assert all(v >= 0 for v in result.charged.values())


def test_no_usage_at_all_uses_our_counts() -> None:
    # C26 variant usage-chunk-never-arrives: 1,200 estimated in, 300 counted out; $0.15 / $0.60.
    result = account(
        None,
        model="gpt-4o-mini",
        prices=book("gpt-4o-mini", input="0.15", output="0.60"),
        input_estimate=1200,
        output_counted=300,
    )
    assert (result.usage.input_source, result.usage.output_source) == (
        "preflight_estimate",
        "counted_stream_text",
    )
    assert result.cost.total_usd == D("0.00036")
    assert result.cost.estimated


def test_served_model_is_priced_first_then_the_requested_one() -> None:
    # C07: the response names the dated snapshot; the row is the undated family.
    prices = book("gpt-5-nano", input="0.05", output="0.40")
    reported = usage_from(
        "openai-chat",
        {
            "prompt_tokens": 17,
            "completion_tokens": 482,
            "completion_tokens_details": {"reasoning_tokens": 448},
        },
    )
    result = account(reported, model="gpt-5-nano", model_served="gpt-5-nano-2025-08-07", prices=prices)
    assert result.cost.total_usd == D("0.00019365")
    assert result.price is not None and result.price.model == "gpt-5-nano"
    # a served name with no row falls back to the model requested
    result = account(reported, model="gpt-5-nano", model_served="fixture-unknown-alias", prices=prices)
    assert result.cost.total_usd == D("0.00019365")


def test_unpriced_model_charges_no_cost_but_still_tokens() -> None:
    result = account(
        Usage(input_tokens=10, output_tokens=5),
        model="fixture-unknown",
        prices=PriceBook({}, use_genai=False),
    )
    assert result.cost.total_usd is None
    assert result.price is None
    assert "cost_usd" not in result.charged
    assert result.charged["total_tokens"] == D(15)


def test_service_tier_context_reaches_the_price() -> None:
    prices = PriceBook(
        {
            "models": {
                "gpt-5-nano": {
                    "input": "0.05",
                    "output": "0.40",
                    "service_tiers": {"flex": {"input": "0.025", "output": "0.20"}},
                }
            }
        },
        use_genai=False,
    )
    result = account(
        Usage(input_tokens=1000, output_tokens=4000),
        model="gpt-5-nano",
        prices=prices,
        context=PriceContext(service_tier="flex"),
    )
    assert result.cost.total_usd == D("0.000825")  # C22


def test_usage_event_round_trip_and_overage() -> None:
    event = UsageEvent(
        request_id="req-fx34",
        at=datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        subject=Subject(user="alice", session="s-1"),
        usage=Usage(input_tokens=1000, output_tokens=500),
        model="claude-sonnet-4-5",
        cost_usd=D("0.0105"),
        charged={"total_tokens": D(1500), "cost_usd": D("0.0105")},
        held={"total_tokens": D(1400), "cost_usd": D("0.02")},
    )
    assert event.at == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    assert event.overage == {"total_tokens": D(100)}
    data = event.to_dict()
    assert data["at"] == "2025-06-01T10:00:00Z"
    assert data["cost_usd"] == "0.0105"
    assert data["usage_complete"] is True
    assert UsageEvent.from_dict(data) == event
    assert UsageEvent.from_dict(json.loads(event.to_json())) == event


def test_usage_event_keeps_unknown_cost_as_none() -> None:
    event = UsageEvent(
        request_id="r",
        at=datetime(2025, 1, 1),
        subject=Subject(),
        usage=Usage(output_tokens=1, input_source="none"),
    )
    data = event.to_dict()
    assert data["cost_usd"] is None
    assert data["usage"]["input_tokens"] is None
    assert data["usage_complete"] is False
    assert UsageEvent.from_dict(data).cost_usd is None
