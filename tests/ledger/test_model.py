"""The budget model in the ledger: templates and their instances, tag scopes, rolling windows,
and the edge cases issue 4 names (deleted budgets with holds, a clock that goes backwards,
daylight-saving days, month ends, leap days, week starts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.ledger.helpers import ALICE, BOB, T0, D, balance, cost_budget, event, spend, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject, parse_budget_spec
from tokenward.core.decide import CallPlan
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded
from tokenward.ledger import BudgetInstance, Ledger


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- templates ---------------------------------------------------------------------------------------
def test_a_template_makes_an_instance_per_value_on_first_use(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(parse_budget_spec("user:total_tokens=200000/day@Europe/Berlin;name=each-user"))
    assert ledger.instances("each-user") == []
    assert [b.instance for b in ledger.balances(ALICE)] == ["each-user[alice]"]  # visible before use, at zero
    ledger.reserve(ALICE, {"total_tokens": D(1000)})
    clock.advance(60)
    ledger.reserve(ALICE, {"total_tokens": D(500)})
    spend(ledger, BOB, {"total_tokens": D(700)})
    assert ledger.instances("each-user") == [
        BudgetInstance("each-user", "alice", T0),
        BudgetInstance("each-user", "bob", T0 + timedelta(seconds=60)),
    ]
    listed = ledger.budget_balances("each-user")
    assert [(b.instance, b.spent, b.held) for b in listed] == [
        ("each-user[alice]", D(0), D(1500)),
        ("each-user[bob]", D(700), D(0)),
    ]
    assert listed[0].to_dict()["template"] is True
    assert ledger.budget_balances("missing") == []


def test_a_fixed_budget_applies_with_the_template_unless_it_overrides_it(ledger: Ledger) -> None:
    ledger.put_budget(Budget("each-user", "user", "total_tokens", D(200)))
    ledger.put_budget(Budget("alice-more", "user", "total_tokens", D(500), subject_id="alice"))
    with pytest.raises(BudgetExceeded) as denied:  # both apply: the template's 200 decides
        ledger.reserve(ALICE, {"total_tokens": D(300)})
    assert denied.value.budget == "each-user"
    ledger.put_budget(
        Budget("alice-more", "user", "total_tokens", D(500), subject_id="alice", overrides="each-user")
    )
    ledger.reserve(ALICE, {"total_tokens": D(300)})  # alice: 500 instead of the template's 200
    assert [b.budget.name for b in ledger.balances(ALICE)] == ["alice-more"]
    with pytest.raises(BudgetExceeded):
        ledger.reserve(BOB, {"total_tokens": D(300)})  # everyone else: 200


def test_changing_a_template_changes_every_instance(ledger: Ledger) -> None:
    ledger.put_budget(Budget("each-user", "user", "cost_usd", D(10)))
    spend(ledger, ALICE, usd("6"))
    spend(ledger, BOB, usd("3"))
    ledger.put_budget(Budget("each-user", "user", "cost_usd", D(5)))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ALICE, usd("0.01"))  # 6 > 5 now
    ledger.reserve(BOB, usd("2"))  # 3 + 2 = 5 fits
    with pytest.raises(BudgetExceeded):
        ledger.reserve(BOB, usd("0.01"))


def test_c42_a_key_inherits_a_templates_daily_limit(ledger: Ledger, clock: ManualClock) -> None:
    """C42: the key has no limit of its own; template tmpl-daily-30 (30 USD a day, UTC) applies."""
    clock.set(z("2025-06-02T15:00:00Z"))
    ledger.put_budget(Budget.from_dict({
        "name": "tmpl-daily-30", "scope": "key", "meter": "cost_usd", "limit": "30",
        "window": {"type": "calendar", "unit": "day", "time_zone": "UTC"},
    }))  # fmt: skip
    key = Subject(key="key-fx42")
    spend(ledger, key, usd("30.00"))
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(key, usd("0.01"))
    assert (denied.value.limit, denied.value.reset_at) == (D("30"), z("2025-06-03T00:00:00Z"))
    control = Subject(key="key-fx42-control")
    spend(ledger, control, usd("29.00"))
    ledger.reserve(control, usd("0.50"))
    assert [i.subject_id for i in ledger.instances("tmpl-daily-30")] == ["key-fx42", "key-fx42-control"]


# -- tags ------------------------------------------------------------------------------------------
def test_a_tag_budget_nests_with_the_others(ledger: Ledger) -> None:
    ledger.put_budget(Budget("each-cost-center", "tag:cost_center", "cost_usd", D(10)))
    ledger.put_budget(cost_budget("alice-usd", "user", "100", "alice"))
    cc42 = Subject(user="alice", tags=(("cost_center", "cc-42"),))
    cc7 = Subject(user="bob", tags=(("cost_center", "cc-7"),))
    spend(ledger, cc42, usd("9"))
    spend(ledger, cc7, usd("9"))
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(cc42, usd("2"))
    assert (denied.value.scope, denied.value.subject_id) == ("tag:cost_center", "cc-42")
    ledger.reserve(ALICE, usd("2"))  # alice without the tag: only her own budget
    assert [e.request_id for e in ledger.events(subject=Subject(tags=(("cost_center", "cc-7"),)))] == [
        ledger.events()[1].request_id
    ]
    assert [i.subject_id for i in ledger.instances("each-cost-center")] == ["cc-42", "cc-7"]


# -- rolling windows -------------------------------------------------------------------------------
def test_a_rolling_budget_forgets_spend_after_its_duration(ledger: Ledger, clock: ManualClock) -> None:
    """rolling:1h, 60 buckets of a minute: spend at 12:00:30 counts until 13:01:00."""
    ledger.put_budget(cost_budget("alice-hour", "user", "10", "alice", window=Window.parse("rolling:1h")))
    clock.set(z("2025-06-02T12:00:30Z"))
    spend(ledger, ALICE, usd("6"))
    clock.set(z("2025-06-02T12:59:00Z"))
    spend(ledger, ALICE, usd("1"))
    clock.set(z("2025-06-02T13:00:59Z"))
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("4"))  # 6 + 1 + 4 > 10
    assert (denied.value.used, denied.value.reset_at) == (D(7), z("2025-06-02T13:01:00Z"))
    clock.set(z("2025-06-02T13:01:00Z"))
    ledger.reserve(ALICE, usd("9"))  # the 6 dropped out: 1 + 9 = 10
    b = balance(ledger, ALICE, "alice-hour")
    # the 1 spent at 12:59 (bucket 12:59) stops counting 61 minutes after its bucket began
    assert (b.spent, b.held, b.window_key, b.reset_at) == (
        D(1),
        D(9),
        "r60:2025-06-02T13:01:00Z",
        z("2025-06-02T14:00:00Z"),
    )


def test_a_rolling_charge_lands_in_the_bucket_of_its_admission(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-hour", "user", "10", "alice", window=Window.parse("rolling:1h")))
    clock.set(z("2025-06-02T12:00:00Z"))
    reservation = ledger.reserve(ALICE, usd("4"))
    clock.set(z("2025-06-02T12:30:00Z"))
    ledger.settle(reservation.id, event(ALICE, usd("3"), at=clock.now()))
    assert spent_held(ledger, ALICE, "alice-hour") == (D(3), D(0))
    clock.set(z("2025-06-02T13:01:00Z"))  # admitted at 12:00: gone with that bucket
    assert spent_held(ledger, ALICE, "alice-hour") == (D(0), D(0))


def test_a_rolling_hard_budget_is_never_overspent_over_any_hour(ledger: Ledger, clock: ManualClock) -> None:
    """Calls of 3 USD every 7 minutes against 10 USD per rolling hour: within any hour-long
    interval at most three calls (9 USD) may be admitted."""
    ledger.put_budget(cost_budget("alice-hour", "user", "10", "alice", window=Window.parse("rolling:1h")))
    admitted = []
    for step in range(60):
        clock.set(T0 + timedelta(minutes=7 * step))
        try:
            reservation = ledger.reserve(ALICE, usd("3"))
        except BudgetExceeded:
            continue
        ledger.settle(reservation.id, event(ALICE, usd("3"), at=clock.now()))
        admitted.append(clock.now())
    assert len(admitted) > 10  # the window really rolled
    for at in admitted:
        assert sum(1 for other in admitted if at - timedelta(hours=1) < other <= at) <= 3


# -- edge cases ------------------------------------------------------------------------------------
def test_deleting_a_budget_that_has_holds(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    kept = ledger.reserve(ALICE, usd("4"))
    released = ledger.reserve(ALICE, usd("3"))
    assert ledger.delete_budget("alice-usd") is True
    ledger.reserve(ALICE, usd("1000"))  # no budget applies any more
    assert ledger.release(released.id) is True  # holds on a deleted budget release cleanly
    # Re-created under the same name, the budget finds its balance row: the 4 still held.
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    assert spent_held(ledger, ALICE, "alice-usd") == (D(0), D(4))
    ledger.settle(kept.id, event(ALICE, usd("2"), at=T0))
    assert spent_held(ledger, ALICE, "alice-usd") == (D(2), D(0))


def test_a_clock_that_goes_backwards(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-daily", "user", "10", "alice", window=Window("day")))
    clock.set(z("2025-06-03T00:00:30Z"))
    late = ledger.reserve(ALICE, usd("4"), ttl=timedelta(seconds=60))
    clock.set(z("2025-06-02T23:59:00Z"))  # the clock steps back over midnight
    assert ledger.reap() == 0  # nothing expires in the past
    early = ledger.reserve(ALICE, usd("7"))  # yesterday's window: the 4 held today do not count
    assert early.created_at == z("2025-06-02T23:59:00Z")
    assert spent_held(ledger, ALICE, "alice-daily") == (D(0), D(7))
    ledger.settle(late.id, event(ALICE, usd("4"), at=clock.now()))  # charged where it was admitted
    assert spent_held(ledger, ALICE, "alice-daily", at=z("2025-06-03T12:00:00Z")) == (D(4), D(0))
    clock.set(z("2025-06-03T00:02:00Z"))
    assert ledger.reap() == 0  # "late" was settled; "early" lives ten minutes
    assert ledger.reservation(early.id).state == "active"  # type: ignore[union-attr]


def test_a_23_hour_day_in_paris(ledger: Ledger, clock: ManualClock) -> None:
    """Paris springs forward on 2025-03-30: its day runs 2025-03-29T23:00Z to 2025-03-30T22:00Z."""
    ledger.put_budget(cost_budget("paris-daily", "user", "10", "alice", window=Window("day", "Europe/Paris")))
    clock.set(z("2025-03-29T23:30:00Z"))  # 00:30 CET on the 30th
    spend(ledger, ALICE, usd("6"))
    clock.set(z("2025-03-30T21:59:59Z"))  # 23:59:59 CEST, same local day
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("5"))
    assert denied.value.reset_at == z("2025-03-30T22:00:00Z")
    clock.set(z("2025-03-30T22:00:00Z"))
    ledger.reserve(ALICE, usd("10"))


def test_month_ends_and_a_leap_day(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-monthly", "user", "10", "alice", window=Window("month")))
    ledger.put_budget(cost_budget("alice-daily", "user", "10", "alice", window=Window("day")))
    spend(ledger, ALICE, usd("3"), at=z("2024-02-29T23:59:59Z"))
    spend(ledger, ALICE, usd("2"), at=z("2024-03-01T00:00:00Z"))
    feb, mar = z("2024-02-15T00:00:00Z"), z("2024-03-31T23:59:59Z")
    assert spent_held(ledger, ALICE, "alice-monthly", at=feb) == (D(3), D(0))
    assert spent_held(ledger, ALICE, "alice-monthly", at=mar) == (D(2), D(0))
    assert spent_held(ledger, ALICE, "alice-daily", at=z("2024-02-29T00:00:00Z")) == (D(3), D(0))
    assert balance(ledger, ALICE, "alice-monthly", at=feb).reset_at == z("2024-03-01T00:00:00Z")
    assert balance(ledger, ALICE, "alice-monthly", at=z("2025-01-31T12:00:00Z")).reset_at == z(
        "2025-02-01T00:00:00Z"
    )


def test_weeks_start_on_the_configured_day(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(
        Budget.from_dict(
            {
                "name": "w",
                "scope": "user",
                "id": "alice",
                "meter": "cost_usd",
                "limit": 10,
                "window": "week",
                "week_start": "sunday",
            }
        )
    )
    spend(ledger, ALICE, usd("4"), at=z("2025-05-31T23:59:59Z"))  # Saturday
    spend(ledger, ALICE, usd("5"), at=z("2025-06-01T00:00:00Z"))  # Sunday: a new week
    b = balance(ledger, ALICE, "w", at=z("2025-06-04T12:00:00Z"))
    assert (b.window_key, b.spent, b.reset_at) == ("2025-06-01T00:00:00Z", D(5), z("2025-06-08T00:00:00Z"))


def test_a_user_per_day_in_berlin_as_a_new_user_sets_it(ledger: Ledger, clock: ManualClock) -> None:
    """Berlin is UTC+2 in June: its day 2025-06-03 starts at 2025-06-02T22:00Z."""
    ledger.put_budget(parse_budget_spec("user:total_tokens=200000/day@Europe/Berlin"))
    clock.set(z("2025-06-02T21:59:00Z"))
    decision, _ = ledger.admit(ALICE, CallPlan("m", input_tokens=150_000, max_output_tokens=60_000))
    assert decision.output_tokens == 50_000  # clamped: 200,000 - 150,000
    with pytest.raises(BudgetExceeded) as denied:
        ledger.admit(ALICE, CallPlan("m", input_tokens=10, max_output_tokens=10))
    assert denied.value.reset_at == z("2025-06-02T22:00:00Z")
    clock.set(z("2025-06-02T22:00:00Z"))
    decision, _ = ledger.admit(ALICE, CallPlan("m", input_tokens=10, max_output_tokens=10))
    assert decision.output_tokens == 10
    assert T0.tzinfo is UTC
