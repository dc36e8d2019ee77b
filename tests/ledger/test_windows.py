"""Calendar windows in the ledger: spend in one window does not count in the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.ledger.helpers import ALICE, D, balance, cost_budget, event, spend, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Ledger

DAILY_30 = Budget.from_dict(
    {"name": "tmpl-daily-30", "scope": "key", "meter": "cost_usd", "limit": "30", "window": "day"}
)


def test_c42_a_spent_day_denies_until_midnight(ledger: Ledger, clock: ManualClock) -> None:
    """C42: limit 30/day, 30.00 spent at 2025-06-02T15:00Z, reserve 0.01: deny, resets 2025-06-03T00:00Z."""
    clock.set(datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
    ledger.put_budget(DAILY_30)
    key = Subject(key="key-fx42")
    spend(ledger, key, usd("30.00"))

    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(key, usd("0.01"))

    e = denied.value
    assert (e.budget, e.scope, e.subject_id) == ("tmpl-daily-30", "key", "key-fx42")
    assert (e.limit, e.used, e.held, e.requested) == (D("30"), D("30.00"), D("0"), D("0.01"))
    assert e.reset_at == datetime(2025, 6, 3, 0, 0, tzinfo=UTC)


def test_c42_control_29_spent_admits_050(ledger: Ledger, clock: ManualClock) -> None:
    clock.set(datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
    ledger.put_budget(DAILY_30)
    key = Subject(key="key-fx42")
    spend(ledger, key, usd("29.00"))
    ledger.reserve(key, usd("0.50"))
    b = balance(ledger, key, "tmpl-daily-30")
    assert (b.spent, b.held, b.window_key) == (D("29.00"), D("0.50"), "2025-06-02T00:00:00Z")
    assert b.reset_at == datetime(2025, 6, 3, tzinfo=UTC)


def test_the_next_day_starts_from_zero(ledger: Ledger, clock: ManualClock) -> None:
    clock.set(datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
    ledger.put_budget(DAILY_30)
    key = Subject(key="key-fx42")
    spend(ledger, key, usd("30.00"))

    clock.set(datetime(2025, 6, 2, 23, 59, 59, 999999, tzinfo=UTC))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(key, usd("0.01"))

    clock.set(datetime(2025, 6, 3, 0, 0, tzinfo=UTC))
    ledger.reserve(key, usd("29.99"))
    today = balance(ledger, key, "tmpl-daily-30")
    assert (today.spent, today.held, today.window_key) == (D("0"), D("29.99"), "2025-06-03T00:00:00Z")
    assert today.reset_at == datetime(2025, 6, 4, tzinfo=UTC)
    yesterday = balance(ledger, key, "tmpl-daily-30", at=datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
    assert (yesterday.spent, yesterday.held) == (D("30.00"), D("0"))


def test_a_direct_charge_lands_in_the_window_of_its_event(ledger: Ledger, clock: ManualClock) -> None:
    clock.set(datetime(2025, 6, 3, 9, 0, tzinfo=UTC))
    ledger.put_budget(cost_budget("alice-daily", "user", "10", "alice", window=Window("day")))
    spend(ledger, ALICE, usd("4"), at=datetime(2025, 6, 2, 23, 59, 59, tzinfo=UTC))
    spend(ledger, ALICE, usd("1"), at=datetime(2025, 6, 3, 0, 0, 0, tzinfo=UTC))
    assert spent_held(ledger, ALICE, "alice-daily") == (D("1"), D("0"))
    assert spent_held(ledger, ALICE, "alice-daily", at=datetime(2025, 6, 2, 12, tzinfo=UTC)) == (
        D("4"),
        D("0"),
    )


def test_a_call_admitted_before_midnight_is_charged_to_that_day(ledger: Ledger, clock: ManualClock) -> None:
    """The hold and the charge stay in the window the call was admitted in."""
    clock.set(datetime(2025, 6, 2, 23, 59, 30, tzinfo=UTC))
    ledger.put_budget(cost_budget("alice-daily", "user", "10", "alice", window=Window("day")))
    reservation = ledger.reserve(ALICE, usd("3"))
    clock.set(datetime(2025, 6, 3, 0, 0, 10, tzinfo=UTC))
    assert spent_held(ledger, ALICE, "alice-daily") == (D("0"), D("0"))  # a new day

    ledger.settle(reservation.id, event(ALICE, usd("2"), at=clock.now()))

    day_one = datetime(2025, 6, 2, 12, tzinfo=UTC)
    assert spent_held(ledger, ALICE, "alice-daily", at=day_one) == (D("2"), D("0"))
    assert spent_held(ledger, ALICE, "alice-daily") == (D("0"), D("0"))


def test_a_day_in_another_time_zone(ledger: Ledger, clock: ManualClock) -> None:
    """Paris is UTC+2 in June: its 2025-06-02 runs from 2025-06-01T22:00Z to 2025-06-02T22:00Z."""
    ledger.put_budget(cost_budget("paris-daily", "user", "10", "alice", window=Window("day", "Europe/Paris")))
    clock.set(datetime(2025, 6, 2, 21, 59, 59, tzinfo=UTC))  # 23:59:59 in Paris
    ledger.reserve(ALICE, usd("6"))
    b = balance(ledger, ALICE, "paris-daily")
    assert (b.window_key, b.reset_at) == ("2025-06-01T22:00:00Z", datetime(2025, 6, 2, 22, tzinfo=UTC))

    clock.advance(timedelta(seconds=1))  # midnight in Paris
    ledger.reserve(ALICE, usd("10"))  # a fresh day: the 6 held yesterday do not count
    b = balance(ledger, ALICE, "paris-daily")
    assert (b.window_key, b.spent, b.held) == ("2025-06-02T22:00:00Z", D("0"), D("10"))
