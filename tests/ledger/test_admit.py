"""admit: decide (clamp or deny) and reserve in one step, on the balances the hold is taken against."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ledger.helpers import ALICE, BOB, T0, D, event, spend, spent_held
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget
from tokenward.core.decide import CallPlan
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Ledger


@pytest.fixture
def tokens1000(ledger: Ledger) -> Ledger:
    """Each user: 1000 total tokens; alice has spent 400."""
    ledger.put_budget(Budget("each-user", "user", "total_tokens", D("1000")))
    spend(ledger, ALICE, {"total_tokens": D("400")})
    return ledger


def test_admit_clamps_the_output_to_what_the_budget_can_pay(tokens1000: Ledger) -> None:
    # 1000 - 400 spent - 200 input = 400 output tokens left, below the 500 asked for.
    decision, reservation = tokens1000.admit(ALICE, CallPlan("m", input_tokens=200, max_output_tokens=500))
    assert decision.output_tokens == 400
    assert decision.clamped_by == "each-user"
    assert reservation.amounts["total_tokens"] == D("600")
    assert spent_held(tokens1000, ALICE, "each-user") == (D("400"), D("600"))
    # Nothing is left: even one output token does not fit.
    with pytest.raises(BudgetExceeded) as denied:
        tokens1000.admit(ALICE, CallPlan("m", input_tokens=1, max_output_tokens=10))
    assert (denied.value.used, denied.value.held, denied.value.requested) == (D("400"), D("600"), D("2"))
    # Bob's instance of the template is untouched.
    tokens1000.admit(BOB, CallPlan("m", input_tokens=200, max_output_tokens=500))
    assert spent_held(tokens1000, BOB, "each-user") == (D("0"), D("700"))


def test_admit_with_an_idempotency_key_returns_the_first_reservation(tokens1000: Ledger) -> None:
    plan = CallPlan("m", input_tokens=100, max_output_tokens=50)
    first = tokens1000.admit(ALICE, plan, idempotency_key="call-1")[1]
    decision, again = tokens1000.admit(ALICE, plan, idempotency_key="call-1")
    assert again.id == first.id
    assert decision.output_tokens == 50
    assert spent_held(tokens1000, ALICE, "each-user") == (D("400"), D("150"))


def test_an_admit_retried_after_its_call_settled_holds_nothing(tokens1000: Ledger) -> None:
    """The settle deleted the reservation; the retry is answered from the call's usage event
    (the decision the call was admitted with, nothing held), never with a second hold."""
    plan = CallPlan("m", input_tokens=100, max_output_tokens=50)
    first = tokens1000.admit(ALICE, plan, idempotency_key="call-1")[1]
    stored = tokens1000.settle(first.id, event(ALICE, {"total_tokens": D("130")}, at=T0, request_id="call-1"))
    assert spent_held(tokens1000, ALICE, "each-user") == (D("530"), D("0"))

    decision, again = tokens1000.admit(ALICE, plan, idempotency_key="call-1")

    assert (again.id, again.state, again.holds) == (first.id, "settled", ())
    assert again.amounts == first.amounts == stored.held
    assert decision.output_tokens == 50
    assert spent_held(tokens1000, ALICE, "each-user") == (D("530"), D("0"))
    assert (
        tokens1000.settle(again.id, event(ALICE, {"total_tokens": D("999")}, at=T0, request_id="call-1"))
        == stored
    )
    assert spent_held(tokens1000, ALICE, "each-user") == (D("530"), D("0"))


def test_a_denied_admit_still_reaps(tokens1000: Ledger, clock: ManualClock) -> None:
    stale = tokens1000.reserve(ALICE, {"total_tokens": D("300")}, ttl=timedelta(seconds=30))
    clock.advance(31)
    with pytest.raises(BudgetExceeded) as denied:
        tokens1000.admit(ALICE, CallPlan("m", input_tokens=700, max_output_tokens=100))  # 400 + 700 > 1000
    assert denied.value.held == D("0")
    assert spent_held(tokens1000, ALICE, "each-user") == (D("400"), D("0"))
    assert tokens1000.reservation(stale.id).state == "expired"  # type: ignore[union-attr]
