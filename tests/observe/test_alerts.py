"""Budget alerts: thresholds, exhaustion, forecasts; once per budget, window and threshold."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.observe.helpers import T0, event, memory_guard
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded, ConfigError
from tokenward.observe import Alert, Alerts, Outbox, threshold_alerts
from tokenward.observe.alerts import parse_thresholds


def daily_usd(limit: str = "1") -> Budget:
    return Budget("alice-daily", "user", "cost_usd", Decimal(limit), subject_id="alice", window=Window("day"))


def test_thresholds_reached_are_reported_from_the_balance_alone() -> None:
    guard, _ = memory_guard()
    guard.ledger.put_budget(daily_usd())
    guard.charge(event("r1", T0, cost="0.85"))
    alerts = threshold_alerts(guard.ledger.balances(Subject(user="alice"), T0), T0)
    assert [(a.kind, a.threshold) for a in alerts] == [
        ("threshold", Decimal("0.5")),
        ("threshold", Decimal("0.8")),
    ]
    assert alerts[1].spent == Decimal("0.85") and alerts[1].window_key == "2025-05-15T00:00:00Z"
    # the same crossing always has the same id; another window gives another one
    again = threshold_alerts(guard.ledger.balances(Subject(user="alice"), T0), T0 + timedelta(minutes=5))
    assert [a.id for a in again] == [a.id for a in alerts]
    tomorrow = Alert(**{**_fields(alerts[0]), "window_key": "2025-05-16T00:00:00Z"})
    assert tomorrow.id != alerts[0].id


def _fields(alert: Alert) -> dict[str, object]:
    return {name: getattr(alert, name) for name in alert.__dataclass_fields__}


def test_alert_round_trips_through_json() -> None:
    guard, _ = memory_guard()
    guard.ledger.put_budget(
        Budget("alice-daily", "user", "cost_usd", Decimal(1), subject_id="alice", mode="soft")
    )
    guard.charge(event("r1", T0, cost="1.25"))
    alert = threshold_alerts(guard.ledger.balances(Subject(user="alice"), T0), T0)[-1]
    assert alert.kind == "exhausted"
    data = alert.to_dict()
    assert data["spent"] == "1.25" and data["utilisation"] == "1.25" and data["type"] == "budget.exhausted"
    assert Alert.from_dict(data) == alert


def test_each_alert_is_raised_once_per_budget_window_and_threshold(tmp_path: Path) -> None:
    seen: list[Alert] = []
    alerts_ = None
    guard, clock = memory_guard()
    alerts_ = Alerts(
        guard.ledger,
        tmp_path / "alerts.db",
        callbacks=[seen.append],
        log=False,
        background=False,
        forecast=False,
    )
    guard.observers.add(alerts_)
    guard.ledger.put_budget(daily_usd())
    for i in range(10):  # 0.1 a call: crosses 50% at call 5, 80% at 8, 100% at 10
        guard.charge(event(f"r{i}", T0 + timedelta(minutes=i), cost="0.1"))
    with pytest.raises(BudgetExceeded):
        guard.charge(event("over", T0 + timedelta(minutes=20), cost="0.5"))
    assert alerts_.deliver() == 3
    assert [(a.kind, a.threshold) for a in seen] == [
        ("threshold", Decimal("0.5")),
        ("threshold", Decimal("0.8")),
        ("exhausted", Decimal("1")),
    ]
    # a second watcher on the same outbox (another process) raises nothing again
    other = Alerts(guard.ledger, tmp_path / "alerts.db", callbacks=[seen.append], log=False, background=False)
    assert other.check(Subject(user="alice"), T0 + timedelta(hours=1)) == []
    # the next day is a new window: the thresholds fire again
    clock.set(T0 + timedelta(days=1))
    for i in range(6):
        guard.charge(event(f"d2-{i}", T0 + timedelta(days=1, minutes=i), cost="0.1"))
    alerts_.deliver()
    assert [a.window_key for a in seen][-1] == "2025-05-16T00:00:00Z"
    assert len(seen) == 4
    alerts_.close()
    other.close()


def test_a_refused_call_raises_the_exhaustion_alert_once(tmp_path: Path) -> None:
    seen: list[Alert] = []
    guard, _ = memory_guard()
    watcher = Alerts(guard.ledger, tmp_path / "a.db", callbacks=[seen.append], log=False, background=False)
    guard.observers.add(watcher)
    guard.ledger.put_budget(Budget("s-tokens", "session", "total_tokens", Decimal(1000)))
    plan = CallPlan("gpt-4o-mini", input_tokens=2000, max_output_tokens=100)
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            guard.admit(Subject(session="s-9"), plan)
    watcher.deliver()
    assert len(seen) == 1 and seen[0].kind == "exhausted" and seen[0].subject_id == "s-9"
    assert seen[0].details["refused"] is True and "refused a call" in seen[0].message
    watcher.close()


def test_forecast_alert_names_the_crossing_inside_the_window(tmp_path: Path) -> None:
    seen: list[Alert] = []
    guard, _ = memory_guard()
    watcher = Alerts(guard.ledger, tmp_path / "a.db", callbacks=[seen.append], log=False, background=False)
    guard.observers.add(watcher)
    guard.ledger.put_budget(
        Budget("daily", "user", "cost_usd", Decimal(10), subject_id="alice", window=Window("day"))
    )
    guard.charge(event("r1", T0, cost="6"))  # $6 by noon of a $10 day (C45)
    watcher.deliver()
    forecast = [a for a in seen if a.kind == "forecast"]
    assert len(forecast) == 1
    assert forecast[0].details["projected_cross_at"] == "2025-05-15T20:00:00Z"
    assert forecast[0].details["projection_horizon_end"] == "2025-05-16T00:00:00Z"
    watcher.close()


def test_log_sink_writes_one_line_per_alert(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    guard, _ = memory_guard()
    watcher = Alerts(guard.ledger, tmp_path / "a.db", background=False, forecast=False)
    guard.observers.add(watcher)
    guard.ledger.put_budget(daily_usd())
    with caplog.at_level(logging.WARNING, logger="tokenward.alerts"):
        guard.charge(event("r1", T0, cost="0.6"))
        watcher.deliver()
    assert [r.message for r in caplog.records if "reached 50%" in r.message]
    assert caplog.records[-1].alert["budget"] == "alice-daily"  # type: ignore[attr-defined]
    watcher.close()


def test_background_watcher_checks_off_the_calling_thread(tmp_path: Path) -> None:
    seen: list[Alert] = []
    guard, _ = memory_guard()
    watcher = Alerts(guard.ledger, tmp_path / "a.db", callbacks=[seen.append], log=False, forecast=False)
    guard.observers.add(watcher)
    guard.ledger.put_budget(daily_usd())
    guard.charge(event("r1", T0, cost="0.9"))
    watcher.flush()
    assert watcher.dispatcher.drain(timeout=10)
    assert len(seen) == 2
    watcher.close()


def test_a_failing_callback_is_retried_not_lost(tmp_path: Path) -> None:
    calls: list[str] = []
    now = [1000.0]

    def flaky(alert: Alert) -> None:
        calls.append(alert.id)
        if len(calls) < 3:
            raise RuntimeError("pager down")

    guard, _ = memory_guard()
    watcher = Alerts(
        guard.ledger,
        tmp_path / "a.db",
        callbacks=[flaky],
        log=False,
        background=False,
        forecast=False,
        time_source=lambda: now[0],
    )
    guard.observers.add(watcher)
    guard.ledger.put_budget(daily_usd())
    guard.charge(event("r1", T0, cost="0.5"))
    assert watcher.deliver() == 0  # attempt 1 fails: next in 1 s
    assert watcher.deliver() == 0  # not due yet
    now[0] += 1
    assert watcher.deliver() == 0  # attempt 2 fails: next in 2 s
    now[0] += 1.5
    assert watcher.deliver() == 0
    now[0] += 0.5
    assert watcher.deliver() == 1
    assert len(calls) == 3 and watcher.outbox.counts() == {"pending": 0, "delivered": 1, "dead": 0}
    watcher.close()


def test_outbox_keeps_each_dedup_key_once(tmp_path: Path) -> None:
    guard, _ = memory_guard()
    guard.ledger.put_budget(daily_usd())
    guard.charge(event("r1", T0, cost="0.5"))
    alert = threshold_alerts(guard.ledger.balances(Subject(user="alice"), T0), T0)[0]
    box = Outbox(f"sqlite:///{tmp_path / 'o.db'}")
    assert box.put(alert, ["log"], now=0) is True
    assert box.put(alert, ["log"], now=1) is False
    assert len(box.alerts()) == 1 and box.counts()["pending"] == 1
    box.close()


@pytest.mark.parametrize("bad", ["0", "150%", "abc", "-1"])
def test_bad_thresholds_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_thresholds([bad])


def test_thresholds_accept_fractions_and_percentages() -> None:
    assert parse_thresholds(["80%", 0.5, "1"]) == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))


def _per_minute(tmp_path: Path) -> tuple[Any, Any, Alerts, list[Alert]]:
    """A guard on a manual clock, alice's ``rolling:1m`` budget of 1,000 tokens, and a watcher."""
    seen: list[Alert] = []
    guard, clock = memory_guard()
    watcher = Alerts(
        guard.ledger, tmp_path / "a.db", callbacks=[seen.append], log=False, background=False, forecast=False
    )
    guard.observers.add(watcher)
    window = Window.parse("rolling:1m")
    guard.ledger.put_budget(
        Budget("per-minute", "user", "total_tokens", Decimal(1000), subject_id="alice", window=window)
    )
    return guard, clock, watcher, seen


def test_a_rolling_window_alerts_once_per_rise_above_a_threshold(tmp_path: Path) -> None:
    """Issue 15 item 7: one crossing of 50% in a ``rolling:1m`` window used to raise an alert per
    1 s bucket (four in four seconds). Now: once, and again only after the spend has fallen back
    below 50%. A charge admitted in the bucket starting at ``b`` counts until ``b + 61 s``."""
    guard, clock, watcher, seen = _per_minute(tmp_path)

    def charge(name: str, seconds: int, tokens: int) -> None:
        clock.set(T0 + timedelta(seconds=seconds))
        guard.charge(event(name, clock.now(), input_tokens=tokens - 10, output_tokens=10))

    charge("rise", 0, 600)  # 600 of 1000: 50% crossed
    for second in (1, 2, 3, 30):  # still 610 ... 640: the same rise
        charge(f"more-{second}", second, 10)
    watcher.deliver()
    assert [(a.kind, a.threshold, a.window_key) for a in seen] == [
        ("threshold", Decimal("0.5"), "r1:2025-05-15T12:00:00Z")
    ]
    charge("after-the-fall", 61, 10)  # the 600 stopped counting at 12:01:01: 50 spent, below 50%
    charge("rise-again", 62, 500)  # 550: a new rise
    charge("still-up", 63, 10)
    watcher.deliver()
    assert [(a.threshold, a.window_key) for a in seen] == [
        (Decimal("0.5"), "r1:2025-05-15T12:00:00Z"),
        (Decimal("0.5"), "r1:2025-05-15T12:01:02Z"),
    ]
    watcher.close()


def test_the_fall_below_is_found_between_two_observed_calls(tmp_path: Path) -> None:
    """No call is seen while the spend is below the threshold: the watcher still knows the first
    rise's spend stopped counting before the second rise."""
    guard, clock, watcher, seen = _per_minute(tmp_path)
    guard.charge(event("first", T0, input_tokens=590, output_tokens=10))  # 600 at 12:00:00
    clock.set(T0 + timedelta(seconds=90))  # the 600 went at 12:01:01; nothing was seen meanwhile
    guard.charge(event("second", clock.now(), input_tokens=590, output_tokens=10))
    watcher.deliver()
    assert [a.window_key for a in seen] == ["r1:2025-05-15T12:00:00Z", "r1:2025-05-15T12:01:30Z"]
    watcher.close()


def test_refusals_by_a_rolling_window_raise_one_exhaustion_alert(tmp_path: Path) -> None:
    guard, clock, watcher, seen = _per_minute(tmp_path)
    guard.charge(event("most", T0, input_tokens=890, output_tokens=10))  # 900: 50% and 80%
    plan = CallPlan("gpt-4o-mini", input_tokens=200, max_output_tokens=100)
    for second in range(1, 5):  # a refusal in each of four buckets
        clock.set(T0 + timedelta(seconds=second))
        with pytest.raises(BudgetExceeded):
            guard.admit(Subject(user="alice"), plan)
    watcher.deliver()
    assert [(a.kind, a.threshold) for a in seen] == [
        ("threshold", Decimal("0.5")),
        ("threshold", Decimal("0.8")),
        ("exhausted", Decimal("1")),
    ]
    watcher.close()
