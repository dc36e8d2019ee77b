"""Custom meters charged through the ledger, and manual adjustments as entries of their own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.ledger.helpers import ALICE, BOB, T0, D, cost_budget, event, spend, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.core.pricebook import PriceBook
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded, ValidationError
from tokenward.guard import Guard
from tokenward.ledger import Ledger, ThreadedAsyncLedger

AGENT = Subject(user="alice", agent="researcher")


def _gpu(limit: str = "3600") -> Budget:
    return Budget("agent-gpu", "agent", "gpu_seconds", D(limit), subject_id="researcher", custom=True)


# -- custom meters ---------------------------------------------------------------------------------
def test_charge_meter_charges_a_custom_meter_and_records_an_event(ledger: Ledger) -> None:
    ledger.put_budget(_gpu())
    ledger.put_budget(Budget("each-agent-tools", "agent", "tool_calls", D(10), custom=True))
    stored = ledger.charge_meter(AGENT, {"gpu_seconds": D("12.5"), "tool_calls": D(1)}, request_id="job-1")
    assert spent_held(ledger, AGENT, "agent-gpu") == (D("12.5"), D(0))
    assert spent_held(ledger, AGENT, "each-agent-tools") == (D(1), D(0))
    assert (stored.request_id, stored.endpoint, stored.at, stored.subject) == ("job-1", "meter", T0, AGENT)
    assert stored.charged == {"gpu_seconds": D("12.5"), "tool_calls": D(1)}
    assert stored.usage.input_tokens is None and stored.cost_usd is None
    assert ledger.events() == [stored]
    # once per request id
    assert ledger.charge_meter(AGENT, {"gpu_seconds": D(99)}, request_id="job-1") == stored
    assert spent_held(ledger, AGENT, "agent-gpu") == (D("12.5"), D(0))


def test_charge_meter_is_admitted_like_a_hold(ledger: Ledger) -> None:
    ledger.put_budget(_gpu())
    ledger.charge_meter(AGENT, {"gpu_seconds": D(3500)})
    with pytest.raises(BudgetExceeded) as denied:
        ledger.charge_meter(AGENT, {"gpu_seconds": D(101)}, request_id="too-much")  # 3601 > 3600
    e = denied.value
    assert (e.budget, e.meter, e.limit, e.used, e.requested) == (
        "agent-gpu",
        "gpu_seconds",
        D(3600),
        D(3500),
        D(101),
    )
    assert [ev.request_id for ev in ledger.events()] != ["too-much"] and len(ledger.events()) == 1
    ledger.charge_meter(AGENT, {"gpu_seconds": D(100)})  # exactly 3600 fits
    # without enforcement it is recorded regardless, like an overage
    ledger.charge_meter(AGENT, {"gpu_seconds": D(5)}, enforce=False)
    assert spent_held(ledger, AGENT, "agent-gpu") == (D(3605), D(0))


def test_a_spent_custom_budget_refuses_the_next_llm_call(ledger: Ledger) -> None:
    ledger.put_budget(_gpu("60"))
    ledger.put_budget(Budget("alice-tokens", "user", "total_tokens", D(10**6), subject_id="alice"))
    plan = CallPlan("m", input_tokens=100, max_output_tokens=100)
    ledger.charge_meter(AGENT, {"gpu_seconds": D(59)})
    ledger.admit(AGENT, plan)  # 1 GPU-second left: LLM calls go on
    ledger.charge_meter(AGENT, {"gpu_seconds": D(1)})  # exhausted
    with pytest.raises(BudgetExceeded) as denied:
        ledger.admit(AGENT, plan)
    assert (denied.value.budget, denied.value.meter, denied.value.requested) == (
        "agent-gpu",
        "gpu_seconds",
        D(0),
    )
    # a raw hold of other meters is not an LLM call: only its own meters are checked
    ledger.reserve(AGENT, {"total_tokens": D(10)})


def test_cache_write_budgets_refuse_once_exhausted(ledger: Ledger) -> None:
    ledger.put_budget(Budget("alice-cache-writes", "user", "cache_write_tokens", D(1000), subject_id="alice"))
    plan = CallPlan("m", input_tokens=10, max_output_tokens=10)
    spend(ledger, ALICE, {"cache_write_tokens": D(1000), "total_tokens": D(1020)})
    with pytest.raises(BudgetExceeded) as denied:
        ledger.admit(ALICE, plan)
    assert denied.value.meter == "cache_write_tokens"


def test_guard_charges_custom_meters_through_both_paths(ledger: Ledger) -> None:
    ledger.put_budget(_gpu("10"))
    guard = Guard(ledger, prices=PriceBook.default())
    direct = guard.charge_meter(AGENT, {"gpu_seconds": D(4)}, request_id="g1")
    recorded = guard.charge(event(AGENT, {"gpu_seconds": D(5)}, at=T0, request_id="g2"))
    assert (direct.charged, recorded.charged) == ({"gpu_seconds": D(4)}, {"gpu_seconds": D(5)})
    assert spent_held(ledger, AGENT, "agent-gpu") == (D(9), D(0))
    with pytest.raises(BudgetExceeded):
        guard.charge_meter(AGENT, {"gpu_seconds": D(2)})
    with pytest.raises(BudgetExceeded):
        guard.charge(event(AGENT, {"gpu_seconds": D(2)}, at=T0))
    assert spent_held(ledger, AGENT, "agent-gpu") == (D(9), D(0))


def test_the_async_twin_has_the_same_methods(ledger: Ledger) -> None:
    ledger.put_budget(_gpu("10"))
    aio = ThreadedAsyncLedger(ledger)

    async def run() -> None:
        await aio.charge_meter(AGENT, {"gpu_seconds": D(4)}, request_id="a1")
        adjustment = await aio.adjust(AGENT, {"gpu_seconds": D(-1)}, reason="refund", actor="ops")
        assert [a.id for a in await aio.adjustments()] == [adjustment.id]
        assert [b.spent for b in await aio.balances(AGENT)] == [D(3)]
        assert await aio.threshold_events() == []

    asyncio.run(run())


# -- adjustments -----------------------------------------------------------------------------------
def test_a_credit_to_a_subject_is_an_entry_of_its_own(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("team-usd", "team", "100", "red"))
    charged = spend(ledger, ALICE, usd("8"))
    clock.advance(60)
    credit = ledger.adjust(ALICE, usd("-3"), reason="refund: failed batch", actor="ops@acme")
    assert spent_held(ledger, ALICE, "alice-usd") == (D(5), D(0))
    assert spent_held(ledger, ALICE, "team-usd") == (D(5), D(0))
    assert ledger.events() == [charged]  # past events are never edited
    assert (credit.actor, credit.reason, credit.amounts, credit.subject) == (
        "ops@acme",
        "refund: failed batch",
        usd("-3"),
        ALICE,
    )
    assert credit.at == T0 + timedelta(seconds=60) and credit.budget is None
    assert sorted(credit.applied) == [
        ("alice-usd", "alice", "", "cost_usd", D(-3)),
        ("team-usd", "red", "", "cost_usd", D(-3)),
    ]
    assert ledger.adjustments() == [credit]


def test_a_correction_to_one_budget_instance(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(Budget("each-user-daily", "user", "cost_usd", D(10), window=Window("day")))
    ledger.put_budget(cost_budget("team-usd", "team", "100", "red"))
    yesterday = datetime(2025, 6, 1, 15, tzinfo=UTC)
    fix = ledger.adjust(
        "each-user-daily", usd("2.5"), subject_id="bob", at=yesterday, reason="missed call", actor="cli"
    )
    assert fix.applied == (("each-user-daily", "bob", "2025-06-01T00:00:00Z", "cost_usd", D("2.5")),)
    assert (fix.subject, fix.budget, fix.subject_id) == (Subject(user="bob"), "each-user-daily", "bob")
    assert spent_held(ledger, BOB, "each-user-daily", at=yesterday) == (D("2.5"), D(0))
    assert spent_held(ledger, BOB, "each-user-daily") == (D(0), D(0))  # today untouched
    assert spent_held(ledger, BOB, "team-usd") == (D(0), D(0))  # only that budget


def test_adjustments_are_idempotent_and_queryable(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("bob-usd", "user", "10", "bob"))
    first = ledger.adjust(ALICE, usd("-1"), reason="credit", actor="ops", adjustment_id="ticket-42")
    again = ledger.adjust(ALICE, usd("-1"), reason="credit", actor="ops", adjustment_id="ticket-42")
    assert again == first and first.id == "ticket-42"  # a retry credits once
    # the id reused for another adjustment (another amount, target or actor: perhaps another
    # project's admin) is refused, shows nothing of the first, and applies nothing
    for target, amounts, actor in [
        (ALICE, usd("-5"), "ops"),
        ("bob-usd", usd("-1"), "ops"),
        (ALICE, usd("-1"), "eve"),
    ]:
        with pytest.raises(ValidationError, match="already used") as refused:
            ledger.adjust(target, amounts, reason="credit", actor=actor, adjustment_id="ticket-42")
        assert "credit" not in str(refused.value) and "alice" not in str(refused.value)
    clock.advance(3600)
    second = ledger.adjust("bob-usd", usd("1"), reason="correction", actor="ops")
    assert second.seq > first.seq
    assert spent_held(ledger, ALICE, "alice-usd") == (D(-1), D(0))
    assert ledger.adjustments(subject=Subject(user="bob")) == [second]
    assert ledger.adjustments(budget="alice-usd") == [first]
    assert ledger.adjustments(since=T0 + timedelta(seconds=1)) == [second]
    assert ledger.adjustments(until=T0 + timedelta(seconds=1)) == [first]
    assert ledger.adjustments(limit=1) == [first]


def test_a_positive_correction_crosses_thresholds(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice", thresholds=(D("0.5"),)))
    fix = ledger.adjust(ALICE, usd("6"), reason="missed", actor="ops")
    (crossing,) = ledger.threshold_events()
    assert (crossing.request_id, crossing.spent) == (fix.id, D(6))
    with pytest.raises(BudgetExceeded):  # the corrected spend counts toward admission
        ledger.reserve(ALICE, usd("4.01"))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"target": ALICE, "amounts": usd("1"), "reason": "", "actor": "ops"}, "reason"),
        ({"target": ALICE, "amounts": usd("1"), "reason": "x", "actor": " "}, "actor"),
        ({"target": ALICE, "amounts": {"cost_usd": D("NaN")}, "reason": "x", "actor": "ops"}, "cost_usd"),
        ({"target": ALICE, "amounts": {"cost_usd": 0.5}, "reason": "x", "actor": "ops"}, "cost_usd"),
        ({"target": "missing", "amounts": usd("1"), "reason": "x", "actor": "ops"}, "target"),
        ({"target": "each-user", "amounts": usd("1"), "reason": "x", "actor": "ops"}, "subject_id"),
        (
            {"target": "alice-usd", "amounts": usd("1"), "reason": "x", "actor": "ops", "subject_id": "bob"},
            "subject_id",
        ),
    ],
)
def test_bad_adjustments_are_validation_errors(ledger: Ledger, call: dict[str, object], field: str) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("each-user", "user", "10"))
    call = dict(call)  # the parameter is shared by every backend
    target = call.pop("target")
    with pytest.raises(ValidationError) as error:
        ledger.adjust(target, **call)  # type: ignore[arg-type]
    assert error.value.field == field
    assert ledger.adjustments() == []
    assert spent_held(ledger, ALICE, "alice-usd") == (D(0), D(0))
