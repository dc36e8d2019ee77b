"""Threshold events: recorded by the ledger with the charge that crossed them, once per budget
instance, window and threshold, numbered for a consumer that resumes where it stopped.

Figures by hand: a 10 USD budget with the default thresholds 50 %, 80 %, 100 % is crossed at 5,
8 and 10 USD of spend in its window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.ledger.conftest import Backend
from tests.ledger.helpers import ALICE, BOB, T0, D, cost_budget, event, spend, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget
from tokenward.core.windows import Window
from tokenward.ledger import Ledger


def _crossings(ledger: Ledger, **kwargs: object) -> list[tuple[str, str, str, str, str]]:
    return [
        (e.budget, e.subject_id, e.window_key, str(e.threshold), str(e.spent))
        for e in ledger.threshold_events(**kwargs)  # type: ignore[arg-type]
    ]


def test_each_threshold_is_recorded_once_as_spend_crosses_it(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("4"))  # 40 %
    assert ledger.threshold_events() == []
    first = spend(ledger, ALICE, usd("1.5"))  # 5.5: 55 %
    spend(ledger, ALICE, usd("3"))  # 8.5: 85 %
    spend(ledger, ALICE, usd("1"))  # 9.5: nothing new
    last = spend(ledger, ALICE, usd("1"))  # 10.5: 105 %
    spend(ledger, ALICE, usd("1"))  # 11.5: nothing new

    assert _crossings(ledger) == [
        ("alice-usd", "alice", "", "0.5", "5.5"),
        ("alice-usd", "alice", "", "0.8", "8.5"),
        ("alice-usd", "alice", "", "1", "10.5"),
    ]
    events = ledger.threshold_events()
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert len({e.id for e in events}) == 3
    assert events[0].request_id == first.request_id and events[2].request_id == last.request_id
    assert (events[0].scope, events[0].meter, events[0].mode, events[0].limit) == (
        "user",
        "cost_usd",
        "hard",
        D("10"),
    )
    assert events[0].at == T0 and events[0].reset_at is None


def test_a_consumer_resumes_after_the_last_id_it_handled(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("9"))  # crosses 50 % and 80 % in one charge, in threshold order
    spend(ledger, ALICE, usd("1"))
    events = ledger.threshold_events()
    assert [str(e.threshold) for e in events] == ["0.5", "0.8", "1"]
    assert ledger.threshold_events(after=events[0].id) == events[1:]
    assert ledger.threshold_events(after=events[-1].id) == []
    assert ledger.threshold_events(limit=1) == events[:1]
    assert ledger.threshold_events(after=events[0].id, limit=1) == events[1:2]


def test_holds_do_not_cross_only_settled_spend_does(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    reservation = ledger.reserve(ALICE, usd("9"))
    assert ledger.threshold_events() == []
    ledger.settle(reservation.id, event(ALICE, usd("6"), at=T0, request_id="call-1"))
    assert _crossings(ledger) == [("alice-usd", "alice", "", "0.5", "6")]
    # settling the same request again changes nothing and records nothing
    ledger.settle(reservation.id, event(ALICE, usd("6"), at=T0, request_id="call-1"))
    assert len(ledger.threshold_events()) == 1


def test_each_window_and_each_instance_has_its_own_crossings(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(Budget("each-user-daily", "user", "cost_usd", D("10"), window=Window("day")))
    spend(ledger, ALICE, usd("6"))
    spend(ledger, BOB, usd("6"))
    clock.advance(timedelta(days=1))
    spend(ledger, ALICE, usd("6"))
    assert _crossings(ledger) == [
        ("each-user-daily", "alice", "2025-06-02T00:00:00Z", "0.5", "6"),
        ("each-user-daily", "bob", "2025-06-02T00:00:00Z", "0.5", "6"),
        ("each-user-daily", "alice", "2025-06-03T00:00:00Z", "0.5", "6"),
    ]
    assert ledger.threshold_events()[0].reset_at == datetime(2025, 6, 3, tzinfo=UTC)


def test_thresholds_are_configurable_per_budget(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("quiet", "user", "10", "alice", thresholds=()))
    ledger.put_budget(cost_budget("loud", "team", "10", "red", thresholds=(D("0.25"), D("1.5"))))
    spend(ledger, ALICE, usd("16"))
    assert _crossings(ledger) == [("loud", "red", "", "0.25", "16"), ("loud", "red", "", "1.5", "16")]


def test_soft_and_shadow_budgets_record_thresholds_too(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("soft", "user", "2", "alice", mode="soft", thresholds=(D("1"),)))
    ledger.put_budget(cost_budget("shadow", "team", "2", "red", mode="shadow", thresholds=(D("1"),)))
    spend(ledger, ALICE, usd("3"))
    assert [(e.budget, e.mode) for e in ledger.threshold_events()] == [("shadow", "shadow"), ("soft", "soft")]


def test_a_limit_lowered_mid_window_records_its_crossings_at_the_next_charge(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("4"))  # 40 % of 10
    ledger.put_budget(cost_budget("alice-usd", "user", "5", "alice"))  # now 80 % of 5
    spend(ledger, ALICE, usd("0.1"))  # 4.1 of 5: at or above 2.5 and 4
    assert _crossings(ledger) == [
        ("alice-usd", "alice", "", "0.5", "4.1"),
        ("alice-usd", "alice", "", "0.8", "4.1"),
    ]
    assert ledger.threshold_events()[0].limit == D("5")


def test_a_zero_charge_records_nothing(ledger: Ledger) -> None:
    ledger.put_budget(Budget("alice-zero", "user", "cost_usd", D("0"), subject_id="alice"))
    spend(ledger, ALICE, usd("0"))
    spend(ledger, ALICE, usd("1"))  # a limit of 0 has no shares
    assert ledger.threshold_events() == []


def test_another_connection_does_not_record_a_crossing_again(backend: Backend) -> None:
    """Each connection caches what it recorded; the store's uniqueness decides across them."""
    first, second = backend.open(), backend.open()
    first.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(first, ALICE, usd("6"))
    spend(second, ALICE, usd("1"))  # 7: still only the 50 % crossing
    spend(first, ALICE, usd("1"))  # 8: 80 %
    spend(second, ALICE, usd("3"))  # 11: 100 %
    assert [str(e.threshold) for e in second.threshold_events()] == ["0.5", "0.8", "1"]
    assert first.threshold_events() == second.threshold_events()


def test_rolling_windows_record_each_new_rise(ledger: Ledger, clock: ManualClock) -> None:
    """rolling:1h (60 buckets of a minute): spend at 12:00 stops counting at 13:01."""
    ledger.put_budget(
        cost_budget(
            "alice-hour", "user", "10", "alice", window=Window.parse("rolling:1h"), thresholds=(D("0.5"),)
        )
    )
    spend(ledger, ALICE, usd("6"))  # 12:00: 60 %
    clock.set(datetime(2025, 6, 2, 12, 30, tzinfo=UTC))
    spend(ledger, ALICE, usd("1"))  # 70 %: no new rise
    clock.set(datetime(2025, 6, 2, 13, 1, tzinfo=UTC))  # the 6 dropped out: 1 of 10 left
    spend(ledger, ALICE, usd("3"))  # 4: 40 %
    spend(ledger, ALICE, usd("2"))  # 6: a new rise above 50 %
    assert _crossings(ledger) == [
        ("alice-hour", "alice", "r60:2025-06-02T12:00:00Z", "0.5", "6"),
        ("alice-hour", "alice", "r60:2025-06-02T13:01:00Z", "0.5", "6"),
    ]
