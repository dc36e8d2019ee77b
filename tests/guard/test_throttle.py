"""The once-a-minute throttle of outage logs: one message per key per period, the rest counted."""

from __future__ import annotations

import logging

import pytest

from tokenward.errors import StoreUnavailable
from tokenward.guard.observers import Observers
from tokenward.throttle import Throttle


def test_one_message_per_key_per_period_and_the_held_back_are_counted() -> None:
    now = [1000.0]
    throttle = Throttle(every=60, clock=lambda: now[0])
    assert throttle.due() == 0  # the first goes through
    now[0] += 59
    assert [throttle.due() for _ in range(3)] == [None, None, None]
    assert throttle.due("other") == 0  # keys are independent
    now[0] += 1  # a minute after the first
    assert throttle.due() == 3  # goes through, with the count of those held back
    assert throttle.due() is None


class _Failing:
    def on_settle(self, event: object) -> None:
        raise StoreUnavailable("ledger store redis://h:6379/0 unreachable")


def test_an_observer_failing_on_a_down_store_is_logged_once_not_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observers = Observers([_Failing()])
    with caplog.at_level(logging.WARNING, logger="tokenward.observers"):
        for _ in range(50):
            observers.settle(object())  # type: ignore[arg-type]
    assert len(caplog.records) == 1
    assert "unreachable" in caplog.records[0].getMessage() and caplog.records[0].exc_info is None
