"""Burn rates and projections over the budget's own window (case C45 and its variant)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.observe.helpers import T0, event
from tests.support.shared import case, variant
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import Balance
from tokenward.core.windows import Window
from tokenward.observe import BurnRates, exhaustion_at, forecast_window
from tokenward.observe.burnrate import DecayedRate


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _budget(scenario: dict[str, Any]) -> Budget:
    spec = scenario["budget"]
    window = spec["window"]
    assert window["type"] == "calendar"
    return Budget(
        "case",
        "user",
        spec["meter"],
        Decimal(spec["limit_usd"]),
        window=Window(window["unit"], window.get("time_zone", "UTC")),
    )


@pytest.mark.parametrize("label", [None, "calendar-month-budget"])
def test_case_c45_projects_over_the_budgets_own_window(label: str | None) -> None:
    base = case("C45")
    c = base if label is None else variant(base, label)
    scenario, expected = c["scenario"], c["expected"]
    forecast = forecast_window(
        _budget(scenario), Decimal(scenario["window_spend_usd"]), _instant(scenario["now"])
    )
    assert forecast is not None
    data = forecast.to_dict()
    assert Decimal(data["projected_window_spend"]) == Decimal(expected["projected_window_spend_usd"])
    assert data["projected_cross_at"] == expected["projected_cross_at"]
    assert data["projection_horizon_end"] == expected["projection_horizon_end"]
    assert forecast.alert is expected["alert"]
    if label is None:  # negative control: not the month end the faulty tool projected a daily budget to
        assert data["projection_horizon_end"] != c["wrong"]["projection_horizon_end"]


def test_a_projection_never_names_an_instant_past_its_window() -> None:
    daily = Budget("d", "user", "cost_usd", Decimal(10), window=Window("day"))
    slow = forecast_window(daily, Decimal(4), T0)  # $4 by noon: $8 by midnight
    assert slow is not None and slow.projected_cross_at is None and slow.alert is False
    assert slow.projected_spend == Decimal(8)
    assert forecast_window(Budget("n", "user", "cost_usd", Decimal(10)), Decimal(4), T0) is None  # no window


def test_window_in_a_time_zone_across_a_daylight_saving_change() -> None:
    # Europe/Paris on 2025-03-30 has 23 hours; at 12:00 local (10:00Z) 11 hours have passed
    budget = Budget("d", "user", "total_tokens", Decimal(2300), window=Window("day", "Europe/Paris"))
    forecast = forecast_window(budget, Decimal(1100), datetime(2025, 3, 30, 10, tzinfo=UTC))
    assert forecast is not None
    assert forecast.window_start == datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert forecast.window_end == datetime(2025, 3, 30, 22, tzinfo=UTC)
    assert forecast.projected_spend == Decimal(2300)
    assert forecast.projected_cross_at == forecast.window_end


def test_exhaustion_time_stays_inside_the_window() -> None:
    reset = T0 + timedelta(hours=12)
    assert exhaustion_at(Decimal(60), Decimal("0.01"), T0, reset) == T0 + timedelta(seconds=6000)
    assert exhaustion_at(Decimal(600), Decimal("0.01"), T0, reset) is None  # after the reset
    assert exhaustion_at(Decimal(0), Decimal("0.01"), T0, reset) == T0
    assert exhaustion_at(Decimal(5), Decimal(0), T0, None) is None


def test_decayed_rate_is_the_ewma_of_the_spend_rate() -> None:
    rate = DecayedRate(timedelta(minutes=10))
    # a steady 100 tokens every 6 s (1,000 tokens/min) converges to 1,000/min
    for i in range(2000):
        rate.add(T0 + timedelta(seconds=6 * i), Decimal(100))
    at = T0 + timedelta(seconds=6 * 1999)
    per_minute = rate.per_second(at) * 60
    # the decayed sum of a steady stream sits a half step above the mean rate (100 * 0.5 / 600 s)
    assert abs(per_minute - 1000) < 6
    # silence decays it by e every tau
    later = rate.per_second(at + timedelta(minutes=10)) * 60
    assert math.isclose(float(later / per_minute), math.exp(-1), rel_tol=1e-9)


def test_burn_rates_per_scope_and_exhaustion() -> None:
    rates = BurnRates(timedelta(minutes=10))
    for i in range(600):  # alice: $0.01 and 1,000 tokens every 6 s for an hour
        rates.add(
            event(f"r{i}", T0 + timedelta(seconds=6 * i), input_tokens=900, output_tokens=100, cost="0.01")
        )
    at = T0 + timedelta(seconds=6 * 599)
    alice = rates.rate("user", "alice", at)
    assert abs(alice.tokens_per_minute - 10_000) < 100
    assert abs(alice.usd_per_hour - 6) < Decimal("0.06")
    assert rates.rate("user", "bob", at).usd_per_hour == 0
    assert rates.rate("all", "", at).requests_per_minute == alice.requests_per_minute
    budget = Budget("d", "user", "cost_usd", Decimal(10), subject_id="alice", window=Window("day"))
    balance = Balance(budget, "alice", "", Decimal(6), Decimal(0), budget.window.reset_at(at))
    when = rates.exhaustion(balance, at)  # $4 left at ~$6/hour: in ~40 minutes
    assert when is not None and timedelta(minutes=38) < when - at < timedelta(minutes=42)
    assert rates.top("user", at)[0].subject_id == "alice"
    assert rates.rate("session", "s-1", at).to_dict()["scope"] == "session"
    assert Subject(user="alice").value("user") == "alice"
