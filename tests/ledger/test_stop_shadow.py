"""``action: stop`` ends a session or task for good; shadow budgets record what they would refuse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import ALICE, T0, D, cost_budget, spend, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.errors import BudgetExceeded, Stopped
from tokenward.ledger import Ledger

S1 = Subject(user="alice", session="s1")
S2 = Subject(user="alice", session="s2")


def _stop_budget(limit: int = 1000, **extra: object) -> Budget:
    return Budget("each-session", "session", "total_tokens", D(limit), action="stop", **extra)  # type: ignore[arg-type]


def test_spend_reaching_the_limit_stops_the_session_for_good(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(_stop_budget())
    spend(ledger, S1, {"total_tokens": D(999)})
    assert ledger.stops() == []
    last = spend(ledger, S1, {"total_tokens": D(1)})  # 1000 of 1000: exhausted
    (marker,) = ledger.stops()
    assert (marker.scope, marker.subject_id, marker.budget, marker.used, marker.limit) == (
        "session",
        "s1",
        "each-session",
        D(1000),
        D(1000),
    )
    assert (marker.at, marker.request_id) == (T0, last.request_id)

    ledger.put_budget(_stop_budget(limit=10**6))  # raising the budget does not bring it back
    clock.advance(timedelta(days=30))
    with pytest.raises(Stopped) as stopped:
        ledger.reserve(S1, {"total_tokens": D(1)})
    e = stopped.value
    assert isinstance(e, BudgetExceeded)
    assert (e.stopped_scope, e.stopped_id, e.stopped_at) == ("session", "s1", T0)
    assert (e.budget, e.used, e.limit, e.requested, e.reset_at) == (
        "each-session",
        D(1000),
        D(1000),
        D(0),
        None,
    )
    assert spent_held(ledger, S1, "each-session") == (D(1000), D(0))
    with pytest.raises(Stopped):
        ledger.admit(S1, CallPlan("m", input_tokens=1, max_output_tokens=1))
    with pytest.raises(Stopped):
        ledger.charge_meter(S1, {"tool_calls": D(1)})
    ledger.reserve(S2, {"total_tokens": D(500)})  # another session goes on
    assert ledger.stop_of(S1) == marker and ledger.stop_of(S2) is None


def test_a_refusal_by_a_stop_budget_stops_the_session(ledger: Ledger) -> None:
    ledger.put_budget(_stop_budget())
    spend(ledger, S1, {"total_tokens": D(900)})
    # 900 spent: a 200-token prompt cannot be paid for even with one output token.
    with pytest.raises(BudgetExceeded) as denied:
        ledger.admit(S1, CallPlan("m", input_tokens=200, max_output_tokens=50))
    assert not isinstance(denied.value, Stopped)  # the refusal itself names the budget's figures
    assert (denied.value.used, denied.value.requested) == (D(900), D(201))
    assert [m.subject_id for m in ledger.stops()] == ["s1"]
    with pytest.raises(Stopped):  # now even a call that would fit is refused
        ledger.admit(S1, CallPlan("m", input_tokens=10, max_output_tokens=10))


def test_a_stop_budget_of_a_wider_scope_ends_the_calls_session_and_task(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "1", "alice", action="stop"))
    worker = Subject(user="alice", session="s9", task="t9")
    spend(ledger, worker, usd("1"))
    assert sorted((m.scope, m.subject_id, m.budget_scope, m.budget_subject_id) for m in ledger.stops()) == [
        ("session", "s9", "user", "alice"),
        ("task", "t9", "user", "alice"),
    ]
    with pytest.raises(Stopped) as stopped:
        ledger.reserve(Subject(user="bob", task="t9"), usd("0"))  # task t9 is over, whoever runs it
    assert (stopped.value.stopped_scope, stopped.value.stopped_id) == ("task", "t9")
    # A call with neither session nor task is only refused, as with action deny.
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("0.01"))
    assert not isinstance(denied.value, Stopped)
    assert len(ledger.stops()) == 2


def test_a_task_budget_stops_its_task_only(ledger: Ledger) -> None:
    ledger.put_budget(Budget("each-task", "task", "requests", D(2), action="stop"))
    t1 = Subject(session="s1", task="t1")
    spend(ledger, t1, {"requests": D(2)})
    assert [(m.scope, m.subject_id) for m in ledger.stops()] == [("task", "t1")]
    with pytest.raises(Stopped):
        ledger.reserve(t1, {"requests": D(1)})
    ledger.reserve(Subject(session="s1", task="t2"), {"requests": D(1)})  # the session goes on


@pytest.mark.parametrize("mode", ["soft", "shadow"])
def test_soft_and_shadow_stop_budgets_never_stop(ledger: Ledger, mode: str) -> None:
    ledger.put_budget(_stop_budget(mode=mode))
    spend(ledger, S1, {"total_tokens": D(5000)})
    ledger.reserve(S1, {"total_tokens": D(10)})
    assert ledger.stops() == []


def test_a_call_admitted_before_the_stop_is_returned_to_its_retry(ledger: Ledger) -> None:
    ledger.put_budget(_stop_budget())
    admitted = ledger.reserve(S1, {"total_tokens": D(100)}, idempotency_key="call-1")
    spend(ledger, S1, {"total_tokens": D(900)})  # 900 + 100 held: not yet exhausted by spend
    spend(ledger, S1, {"total_tokens": D(100)})  # 1000 spent: stopped
    assert ledger.reserve(S1, {"total_tokens": D(100)}, idempotency_key="call-1").id == admitted.id


def test_stops_are_seen_by_every_connection(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.put_budget(_stop_budget())
    second.reserve(S1, {"total_tokens": D(1)})  # caches the (empty) stops
    spend(first, S1, {"total_tokens": D(1000)})
    with pytest.raises(Stopped):
        second.reserve(S1, {"total_tokens": D(1)})


# -- shadow budgets --------------------------------------------------------------------------------
def test_a_shadow_budget_records_what_it_would_have_refused(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("shadow-user", "user", "1.00", "alice", mode="shadow"))
    ledger.put_budget(cost_budget("hard-org", "org", "100", "acme"))
    spend(ledger, ALICE, usd("0.90"))
    fits = ledger.reserve(ALICE, usd("0.10"))  # 0.90 + 0.10 = 1.00: fits
    assert ledger.shadow_denials() == []
    over = ledger.reserve(ALICE, usd("0.20"), idempotency_key="call-7")  # 0.90 + 0.10 held + 0.20 > 1.00
    (would,) = ledger.shadow_denials()
    assert (would.budget, would.scope, would.subject_id, would.meter) == (
        "shadow-user",
        "user",
        "alice",
        "cost_usd",
    )
    assert (would.limit, would.used, would.held, would.requested) == (
        D("1.00"),
        D("0.90"),
        D("0.10"),
        D("0.20"),
    )
    assert (would.at, would.request_id, would.reservation_id, would.subject) == (T0, "call-7", over.id, ALICE)
    assert spent_held(ledger, ALICE, "shadow-user") == (D("0.90"), D("0.30"))  # held on, never enforced
    assert fits.state == over.state == "active"


def test_admit_records_shadow_denials_with_the_call(ledger: Ledger) -> None:
    ledger.put_budget(
        Budget("shadow-tokens", "user", "total_tokens", D(100), subject_id="alice", mode="shadow")
    )
    decision, reservation = ledger.admit(
        ALICE, CallPlan("m", input_tokens=150, max_output_tokens=50), idempotency_key="r1"
    )
    assert decision.would_deny == ("shadow-tokens",) and decision.output_tokens == 50
    (would,) = ledger.shadow_denials()
    assert (would.requested, would.request_id, would.reservation_id) == (D(151), "r1", reservation.id)


def test_a_call_a_hard_budget_refuses_records_no_shadow_denial(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("shadow-user", "user", "1", "alice", mode="shadow"))
    ledger.put_budget(cost_budget("hard-team", "team", "1", "red"))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ALICE, usd("2"))
    assert ledger.shadow_denials() == []


def test_shadow_denials_by_budget_and_after_an_id(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("shadow-a", "user", "0", "alice", mode="shadow"))
    ledger.put_budget(cost_budget("shadow-b", "team", "0", "red", mode="shadow"))
    ledger.reserve(ALICE, usd("1"))
    ledger.reserve(ALICE, usd("1"))
    every = ledger.shadow_denials()
    assert [d.budget for d in every] == ["shadow-a", "shadow-b", "shadow-a", "shadow-b"]
    assert [d.id for d in every] == sorted(d.id for d in every)
    assert ledger.shadow_denials(budget="shadow-b") == [every[1], every[3]]
    assert ledger.shadow_denials(after=every[1].id) == every[2:]
    assert ledger.shadow_denials(limit=1) == every[:1]
