"""Crash-safe settlement, on every backend (issue 14, item 5; and the storable events of item 6).

A reservation made ``forwarded`` (for a call sent to a provider) is never released for free: when
it expires unsettled, or its owner process is found dead, it is charged its hold with a
``reclaimed`` event; the call's real settlement, arriving later, replaces that charge through a
correction event, so the call is charged exactly what it cost, once. On the branch point an
expired hold was released uncharged (0 events) and ``forwarded`` did not exist.

Figures are worked by hand in the comments; the budget is ``alice-usd``: 10 USD, no window.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import ALICE, T0, D, cost_budget, event, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError
from tokenward.ledger import Ledger

TTL = timedelta(seconds=60)


def _setup(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))


def _forwarded(ledger: Ledger, amount: str, request_id: str = "req-1") -> str:
    return ledger.reserve(
        ALICE,
        usd(amount),
        ttl=TTL,
        idempotency_key=request_id,
        metadata={"model": "gpt-4o-mini", "endpoint": "openai-chat"},
        forwarded=True,
    ).id


def test_a_forwarded_reservation_that_expires_is_charged_its_hold(ledger: Ledger, clock: ManualClock) -> None:
    _setup(ledger)
    reservation_id = _forwarded(ledger, "2.50")
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("2.50"))
    clock.advance(TTL + timedelta(seconds=1))
    assert ledger.reap() == 1
    # the hold became spend: 2.50 spent, nothing held
    assert spent_held(ledger, ALICE, "alice-usd") == (D("2.50"), D("0"))
    assert ledger.reservation(reservation_id).state == "reclaimed"  # type: ignore[union-attr]
    (reclaimed,) = ledger.events()
    assert (reclaimed.request_id, reclaimed.status, reclaimed.model) == ("req-1", "reclaimed", "gpt-4o-mini")
    assert reclaimed.charged == {"cost_usd": D("2.50")} and reclaimed.cost_usd == D("2.50")
    assert reclaimed.cost_estimated and reclaimed.at == T0
    assert reclaimed.metadata["cost_basis"] == "hold" and reclaimed.metadata["reclaimed"] == "expired"
    assert reclaimed.usage.input_tokens is None  # unknown: nothing came back
    clock.advance(TTL)
    assert ledger.reap() == 0  # once


def test_a_reservation_not_forwarded_that_expires_is_released(ledger: Ledger, clock: ManualClock) -> None:
    _setup(ledger)
    reservation = ledger.reserve(ALICE, usd("2.50"), ttl=TTL, idempotency_key="req-1")
    assert not reservation.forwarded
    clock.advance(TTL + timedelta(seconds=1))
    assert ledger.reap() == 1
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("0"))
    assert ledger.reservation(reservation.id).state == "expired"  # type: ignore[union-attr]
    assert ledger.events() == []


def test_the_real_settle_after_a_reclaim_corrects_the_charge_once(ledger: Ledger, clock: ManualClock) -> None:
    _setup(ledger)
    reservation_id = _forwarded(ledger, "2.50")
    clock.advance(TTL + timedelta(seconds=1))
    ledger.reap()  # charged the hold: 2.50
    real = UsageEvent(
        request_id="req-1",
        at=T0,
        subject=ALICE,
        usage=Usage(input_tokens=100, output_tokens=20),
        model="gpt-4o-mini",
        status="ok",
        cost_usd=D("0.40"),
        charged=usd("0.40"),
        metadata={"response_id": "chatcmpl-1"},
    )
    settled = ledger.settle(reservation_id, real)
    assert (settled.request_id, settled.charged, settled.status) == ("req-1", usd("0.40"), "ok")
    # 2.50 (hold) - 2.10 (correction) = 0.40, the real charge
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.40"), D("0"))
    for _ in range(2):  # a repeated late settle (a replay, with or without its reservation) adds nothing
        ledger.settle(reservation_id, real)
        ledger.settle(None, real)
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.40"), D("0"))
    reclaimed, correction = ledger.events()
    assert reclaimed.status == "reclaimed"
    assert correction.request_id == "req-1:correction" and correction.status == "ok"
    assert correction.charged == {"cost_usd": D("-2.10")} and correction.cost_usd == D("-2.10")
    assert correction.usage.output_tokens == 20 and correction.metadata["corrects"] == "req-1"
    assert correction.metadata["charged_in_full"] == {"cost_usd": "0.4"}
    assert sum((e.cost_usd or D(0) for e in (reclaimed, correction)), D(0)) == D("0.40")


def test_a_call_settled_in_time_is_never_reclaimed(ledger: Ledger, clock: ManualClock) -> None:
    _setup(ledger)
    reservation_id = _forwarded(ledger, "2.50")
    ledger.settle(reservation_id, event(ALICE, usd("0.30"), at=T0, request_id="req-1"))
    clock.advance(TTL * 2)
    assert ledger.reap() == 0
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.30"), D("0"))
    assert [e.status for e in ledger.events()] == ["ok"]


def test_a_forwarded_hold_whose_call_was_settled_without_it_leaves_nothing_held(
    ledger: Ledger, clock: ManualClock
) -> None:
    """A stalled store: the admission's hold reached it after the caller had given up and admitted
    the call unchecked (fail-open budget); the call was settled without that reservation. When the
    hold expires it is not charged again (the call's event stands) and nothing stays held. Found by
    tests/scale/test_faults.py on Redis: 29 tokens held for ever (its reclaim answered DUP)."""
    _setup(ledger)
    _forwarded(ledger, "2.50")
    ledger.settle(None, event(ALICE, usd("0.30"), at=T0, request_id="req-1"))
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.30"), D("2.50"))
    clock.advance(TTL + timedelta(seconds=1))
    ledger.reap()
    ledger.reap()  # Redis: the first reap moves it to the reclaim queue and reclaims it; once more
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.30"), D("0"))
    assert [(e.request_id, e.status) for e in ledger.events()] == [("req-1", "ok")]


_CHILD = """
import os, sys
from datetime import timedelta
from decimal import Decimal
from tokenward.core.budgets import Budget, Subject
from tokenward.ledger import open_ledger
ledger = open_ledger(sys.argv[1])
alice = Subject(org="acme", team="red", user="alice")
ledger.reserve(alice, {"cost_usd": Decimal("1.00")}, ttl=timedelta(hours=1), idempotency_key="req-f", forwarded=True)
ledger.reserve(alice, {"cost_usd": Decimal("2.00")}, ttl=timedelta(hours=1), idempotency_key="req-n")
os._exit(0)  # dies without settling, releasing or closing anything
"""


def test_the_reservations_of_a_dead_process_are_reclaimed_without_waiting_for_their_ttl(
    backend: Backend, ledger: Ledger
) -> None:
    if not backend.spec.shared_store:
        pytest.skip("memory:// lives in one process")
    _setup(ledger)
    subprocess.run([sys.executable, "-c", _CHILD, backend.url], check=True, timeout=60)
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("3.00"))  # both held, an hour to go
    assert ledger.reclaim_dead() == 2
    # the forwarded one (1.00) is charged, the other (2.00) released
    assert spent_held(ledger, ALICE, "alice-usd") == (D("1.00"), D("0"))
    (reclaimed,) = ledger.events()
    assert (reclaimed.request_id, reclaimed.status) == ("req-f", "reclaimed")
    assert reclaimed.metadata["reclaimed"] == "owner_dead"
    assert ledger.reclaim_dead() == 0


def test_strings_no_store_keeps_are_normalised_and_flagged(ledger: Ledger) -> None:
    """A NUL in the model name an upstream answered with made every PostgreSQL settle fail on the
    branch point (answers 200, 0 events); a lone surrogate fails SQLite's UTF-8 encoding."""
    _setup(ledger)
    poisoned = UsageEvent(
        request_id="req-nul",
        at=T0,
        subject=ALICE,
        usage=Usage(input_tokens=10, output_tokens=5),
        model="gpt-4o-mini\x00",
        status="ok",
        cost_usd=D("0.01"),
        charged=usd("0.01"),
        metadata={"model_served": "gpt\x00-4o", "finish_reason": "\ud800stop"},
    )
    stored = ledger.settle(None, poisoned)
    assert stored.model == "gpt-4o-mini\ufffd"
    (found,) = ledger.events()
    assert found.model == "gpt-4o-mini\ufffd"
    assert found.metadata["model_served"] == "gpt\ufffd-4o"
    assert found.metadata["finish_reason"] == "\ufffdstop"
    assert found.metadata["normalised"] == ["metadata.finish_reason", "metadata.model_served", "model"]
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.01"), D("0"))


def test_a_subject_no_store_keeps_is_refused_before_anything_is_held(ledger: Ledger) -> None:
    _setup(ledger)
    with pytest.raises(ValidationError, match="session"):
        ledger.reserve(Subject(user="alice", session="s\x00-1"), usd("1"))
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("0"))


def test_events_are_found_by_provider_response_id(ledger: Ledger) -> None:
    for n in (1, 2):
        ledger.settle(
            None,
            UsageEvent(
                request_id=f"req-{n}",
                at=T0,
                subject=ALICE,
                usage=Usage(input_tokens=n, output_tokens=n),
                metadata={"response_id": f"resp_{n}"},
            ),
        )
    found = ledger.event_by_metadata("response_id", "resp_2")
    assert found is not None and found.request_id == "req-2"
    assert ledger.event_by_metadata("response_id", "resp_3") is None


def test_disputed_events_are_listed(ledger: Ledger) -> None:
    for request_id, disputed in (("req-a", True), ("req-b", None), ("req-c", False)):
        metadata = {} if disputed is None else {"disputed": disputed}
        ledger.settle(
            None,
            UsageEvent(
                request_id=request_id, at=T0, subject=ALICE, usage=Usage(output_tokens=1), metadata=metadata
            ),
        )
    assert [e.request_id for e in ledger.disputed_events()] == ["req-a"]


def test_a_reclaimed_event_keeps_exact_amounts_of_every_meter(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(Budget("alice-tokens", "user", "total_tokens", Decimal(1000), subject_id="alice"))
    amounts = {"total_tokens": Decimal(130), "requests": Decimal(1), "cost_usd": Decimal("0.000123")}
    ledger.reserve(ALICE, amounts, ttl=TTL, idempotency_key="req-t", forwarded=True)
    clock.advance(TTL * 2)
    ledger.reap()
    (reclaimed,) = ledger.events()
    assert reclaimed.charged == amounts
    assert spent_held(ledger, ALICE, "alice-tokens") == (D("130"), D("0"))


def test_an_exited_unreaped_process_is_dead() -> None:
    """A worker killed with its supervisor is a zombie until something reaps it; it still answers
    kill(pid, 0), yet it runs no more: its holds are reclaimed at the next start-up."""
    import time as _time

    from tokenward.ledger import owner

    child = subprocess.Popen(["sleep", "30"])
    try:
        name = f"{owner._host()}/{child.pid}/{owner._start_ticks(child.pid)}"
        assert not owner.is_dead(name)  # running
        child.kill()
        deadline = _time.monotonic() + 10
        while owner._stat(child.pid)[:1] != [b"Z"] and _time.monotonic() < deadline:
            _time.sleep(0.01)
        assert owner._stat(child.pid)[:1] == [b"Z"]  # exited, not reaped (no wait() yet)
        assert owner.is_dead(name)
    finally:
        child.kill()
        child.wait()
