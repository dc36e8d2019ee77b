"""The ledger against a reference model in plain Python, driven by hypothesis.

The model is written from the contract, not from the code: a dict of (spent, held) per budget
instance, reservations with their holds and states, and the request ids already settled. A
settled or released reservation is gone from the ledger (``reservation(id)`` is None): settling it
again charges the event's own windows with nothing held, and its idempotency key is free again
(the machine's keys are never request ids, so no usage event answers for them). Every
step runs on both; afterwards every balance must match exactly, and a hard budget that was only
ever charged within its holds must satisfy spent + held <= limit.

A charge is "unguarded" when it did not replace a live hold of at least its size: an overage, a
settle after the reservation expired or was released (the call still happened), or a direct
charge without reservation. Those are allowed to push a budget over its limit (promise 1); the
invariant is checked on every other budget instance.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.ledger.backends import BACKEND_PARAMS, BACKENDS, BackendSpec, require_available
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Ledger, open_ledger

START = datetime(2025, 6, 2, 21, 0, tzinfo=UTC)  # three hours before a day boundary
ZERO = Decimal(0)

BUDGETS = (
    Budget("alice-usd", "user", "cost_usd", Decimal("5"), subject_id="alice"),
    Budget("each-user-day-tokens", "user", "total_tokens", Decimal("800"), window=Window("day")),
    Budget("team-red-usd", "team", "cost_usd", Decimal("7"), subject_id="red"),
    Budget("team-red-soft", "team", "cost_usd", Decimal("3"), subject_id="red", mode="soft"),
    Budget("each-user-shadow", "user", "requests", Decimal("4"), mode="shadow"),
)
SUBJECTS = (
    Subject(user="alice", team="red"),
    Subject(user="bob", team="red"),
    Subject(user="carol"),
    Subject(team="red", session="s1"),
)
Row = tuple[str, str, str]  # budget name, subject id, window key


# -- the reference model -----------------------------------------------------------------------
def _applies(budget: Budget, subject: Subject) -> str | None:
    value = getattr(subject, budget.scope)
    if not value or (budget.subject_id is not None and budget.subject_id != value):
        return None
    return str(value)


def _window_key(budget: Budget, at: datetime) -> str:
    return f"{at:%Y-%m-%d}T00:00:00Z" if budget.window.unit == "day" else ""


def _rows(subject: Subject, at: datetime) -> list[tuple[Budget, Row]]:
    out = []
    for budget in BUDGETS:
        sid = _applies(budget, subject)
        if sid is not None:
            out.append((budget, (budget.name, sid, _window_key(budget, at))))
    return out


@dataclass
class ModelReservation:
    subject: Subject
    amounts: dict[str, Decimal]
    holds: list[tuple[Row, str, Decimal]]  # row, meter, amount
    created: datetime
    expires: datetime
    state: str = "active"


@dataclass
class Model:
    now: datetime = START
    balances: dict[Row, list[Decimal]] = field(default_factory=dict)
    unguarded: set[Row] = field(default_factory=set)
    reservations: dict[str, ModelReservation] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    settled: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    def gone(self, rid: str) -> bool:
        """Whether the ledger deleted this reservation (it was settled or released)."""
        return self.reservations[rid].state in ("settled", "released")

    def row(self, row: Row) -> list[Decimal]:
        return self.balances.setdefault(row, [ZERO, ZERO])

    def reap(self) -> list[str]:
        expired = [i for i, r in self.reservations.items() if r.state == "active" and r.expires <= self.now]
        for rid in expired:
            self._drop_holds(self.reservations[rid])
            self.reservations[rid].state = "expired"
        return expired

    def _drop_holds(self, reservation: ModelReservation) -> None:
        for row, _meter, amount in reservation.holds:
            self.row(row)[1] -= amount

    def check(self, subject: Subject, amounts: dict[str, Decimal]) -> list[tuple[Budget, Row]]:
        """The hard budgets that cannot take ``amounts`` (a zero hold always fits, as in C43)."""
        failing = []
        for budget, row in _rows(subject, self.now):
            amount = amounts.get(budget.meter)
            if budget.mode != "hard" or not amount:
                continue
            spent, held = self.row(row)
            if spent + held + amount > budget.limit:
                failing.append((budget, row))
        return failing

    def hold(
        self, rid: str, subject: Subject, amounts: dict[str, Decimal], ttl: int, key: str | None
    ) -> None:
        holds = [
            (row, b.meter, amounts[b.meter]) for b, row in _rows(subject, self.now) if b.meter in amounts
        ]
        for row, _meter, amount in holds:
            self.row(row)[1] += amount
        self.reservations[rid] = ModelReservation(
            subject, amounts, holds, self.now, self.now + timedelta(seconds=ttl)
        )
        if key is not None:
            self.keys[key] = rid

    def settle(self, rid: str | None, subject: Subject, charged: dict[str, Decimal], at: datetime) -> None:
        held: dict[str, Decimal] = {}
        reservation = self.reservations.get(rid) if rid else None
        if reservation is not None and reservation.state in ("settled", "released"):
            reservation = None  # deleted: charged as a settle without reservation
        if reservation is not None:
            at, subject = reservation.created, reservation.subject
            if reservation.state == "active":
                self._drop_holds(reservation)
                held = reservation.amounts
            reservation.state = "settled"
        for budget, row in _rows(subject, at):
            amount = charged.get(budget.meter)
            if amount:
                self.row(row)[0] += amount
                if amount > held.get(budget.meter, ZERO):
                    self.unguarded.add(row)

    def release(self, rid: str) -> bool:
        reservation = self.reservations.get(rid)
        if reservation is None or reservation.state != "active":
            return False
        self._drop_holds(reservation)
        reservation.state = "released"
        return True


# -- the machine -------------------------------------------------------------------------------
def _cents(n: int) -> Decimal:
    return Decimal(n) / 100


amounts_strategy = st.fixed_dictionaries(
    {},
    optional={
        "cost_usd": st.integers(0, 400).map(_cents),
        "total_tokens": st.integers(0, 700).map(Decimal),
        "requests": st.just(Decimal(1)),
    },
)
SETTLE_HOW = st.sampled_from(["zero", "half", "exact", "exact", "over", "extra"])


def _charge(amounts: dict[str, Decimal], how: str) -> dict[str, Decimal]:
    """What a settle charges: nothing, half, the hold, more than the hold, or an unheld meter too."""
    return {
        "zero": {m: ZERO for m in amounts},
        "half": {m: a / 2 for m, a in amounts.items()},
        "exact": dict(amounts),
        "over": {m: a + 1 for m, a in amounts.items()},
        "extra": {**amounts, "total_tokens": amounts.get("total_tokens", ZERO) + 50},
    }[how]


def build_machine(spec: BackendSpec, root: Path) -> type[RuleBasedStateMachine]:
    """The state machine over a fresh ``spec`` ledger per example (files under ``root``)."""
    examples = itertools.count()

    class LedgerMachine(RuleBasedStateMachine):
        active = Bundle("active")  # reservations not yet settled or released by a rule
        requests = Bundle("requests")  # request ids already settled

        def __init__(self) -> None:
            super().__init__()
            self.dir = Path(tempfile.mkdtemp(prefix=f"ex{next(examples)}-", dir=root))
            self.clock = ManualClock(START)
            self.ledger: Ledger = open_ledger(spec.make_url(self.dir), clock=self.clock)
            for budget in BUDGETS:
                self.ledger.put_budget(budget)
            self.model = Model()
            self.ids = itertools.count()

        def teardown(self) -> None:
            self.ledger.close()
            shutil.rmtree(self.dir, ignore_errors=True)

        def _event(self, subject: Subject, charged: dict[str, Decimal], at: datetime, rid: str) -> UsageEvent:
            usage = Usage(input_tokens=1, output_tokens=1)
            return UsageEvent(request_id=rid, at=at, subject=subject, usage=usage, charged=charged)

        def _check_state(self, rid: str) -> None:
            stored = self.ledger.reservation(rid)
            if self.model.gone(rid):
                assert stored is None, stored
            else:
                assert stored is not None and stored.state == self.model.reservations[rid].state

        @rule(
            target=active,
            subject=st.sampled_from(SUBJECTS),
            amounts=amounts_strategy,
            ttl=st.sampled_from([5, 30, 600, 3600]),
            key=st.sampled_from([None, None, None, None, "k1", "k2"]),
        )
        def reserve(self, subject: Subject, amounts: dict[str, Decimal], ttl: int, key: str | None):  # type: ignore[no-untyped-def]
            self.model.reap()
            call = {"ttl": timedelta(seconds=ttl), "idempotency_key": key}
            if key is not None and key in self.model.keys and not self.model.gone(self.model.keys[key]):
                assert self.ledger.reserve(subject, amounts, **call).id == self.model.keys[key]  # type: ignore[arg-type]
                event("reserve: idempotency key seen before")
                return multiple()
            failing = {row[0]: (budget, row) for budget, row in self.model.check(subject, amounts)}
            if failing:
                with pytest.raises(BudgetExceeded) as denied:
                    self.ledger.reserve(subject, amounts, **call)  # type: ignore[arg-type]
                e = denied.value
                assert e.budget in failing, f"denied by {e.budget}; the model says {sorted(failing)}"
                budget, row = failing[e.budget]
                spent, held = self.model.row(row)
                got = (e.subject_id, e.limit, e.used, e.held, e.requested)
                assert got == (row[1], budget.limit, spent, held, amounts[budget.meter])
                event("reserve: denied")
                return multiple()
            reservation = self.ledger.reserve(subject, amounts, **call)  # type: ignore[arg-type]
            self.model.hold(reservation.id, subject, amounts, ttl, key)
            want = set(self.model.reservations[reservation.id].holds)
            assert {
                ((h.budget, h.subject_id, h.window_key), h.meter, h.amount) for h in reservation.holds
            } == want
            event("reserve: admitted")
            return reservation.id

        def _settle(self, rid: str, how: str) -> str:
            reservation = self.model.reservations[rid]
            event(f"settle: reservation {reservation.state}, {how}")
            charged = _charge(reservation.amounts, how)
            request_id = f"req-{next(self.ids)}"
            gone = self.model.gone(rid)
            stored = self.ledger.settle(
                rid, self._event(reservation.subject, charged, self.clock.now(), request_id)
            )
            self.model.settle(rid, reservation.subject, charged, self.model.now)
            self.model.settled[request_id] = charged
            want = (None, charged, {}) if gone else (rid, charged, reservation.amounts)
            assert (stored.reservation_id, stored.charged, stored.held) == want
            self._check_state(rid)
            return request_id

        @rule(target=requests, rid=consumes(active), how=SETTLE_HOW)
        def settle(self, rid: str, how: str) -> str:
            return self._settle(rid, how)

        @rule(rid=consumes(active))
        def release(self, rid: str) -> None:
            event(f"release: reservation {self.model.reservations[rid].state}")
            assert self.ledger.release(rid) == self.model.release(rid)
            self._check_state(rid)

        @precondition(lambda self: bool(self.model.reservations))
        @rule(target=requests, data=st.data(), how=SETTLE_HOW)
        def settle_any(self, data: st.DataObject, how: str) -> str:
            """Settle any reservation again: settled, released or expired ones included."""
            return self._settle(data.draw(st.sampled_from(list(self.model.reservations))), how)

        @precondition(lambda self: bool(self.model.reservations))
        @rule(data=st.data())
        def release_any(self, data: st.DataObject) -> None:
            rid = data.draw(st.sampled_from(list(self.model.reservations)))
            assert self.ledger.release(rid) == self.model.release(rid)
            self._check_state(rid)

        @rule(request_id=requests)
        def settle_same_request_again(self, request_id: str) -> None:
            rid = next(iter(self.model.reservations), None)
            late = self._event(SUBJECTS[0], {"cost_usd": Decimal(99)}, self.clock.now(), request_id)
            assert self.ledger.settle(rid, late).charged == self.model.settled[request_id]

        @rule(
            target=requests,
            subject=st.sampled_from(SUBJECTS),
            cents=st.integers(0, 300),
            tokens=st.integers(0, 300),
            hours_back=st.sampled_from([0, 5, 30]),
        )
        def settle_direct(self, subject: Subject, cents: int, tokens: int, hours_back: int) -> str:
            charged = {"cost_usd": _cents(cents), "total_tokens": Decimal(tokens)}
            at = self.model.now - timedelta(hours=hours_back)
            request_id = f"req-{next(self.ids)}"
            stored = self.ledger.settle(None, self._event(subject, charged, at, request_id))
            self.model.settle(None, subject, charged, at)
            self.model.settled[request_id] = charged
            assert stored.reservation_id is None
            return request_id

        @rule()
        def reap(self) -> None:
            expired = self.model.reap()
            event(f"reap: {'some' if expired else 'none'} expired")
            assert self.ledger.reap() == len(expired)
            for rid in expired:
                self._check_state(rid)

        @rule(seconds=st.sampled_from([1, 29, 30, 31, 600, 3600, 4 * 3600]))
        def advance(self, seconds: int) -> None:
            self.clock.advance(timedelta(seconds=seconds))
            self.model.now += timedelta(seconds=seconds)

        @invariant()
        def balances_match_the_model(self) -> None:
            for subject in SUBJECTS:
                got = {
                    b.budget.name: ((b.budget.name, b.subject_id, b.window_key), b.spent, b.held)
                    for b in self.ledger.balances(subject)
                }
                want = {}
                for budget, row in _rows(subject, self.model.now):
                    spent, held = self.model.balances.get(row, [ZERO, ZERO])
                    want[budget.name] = (row, spent, held)
                    if budget.mode == "hard" and row not in self.model.unguarded:
                        assert spent + held <= budget.limit, f"{row}: {spent} + {held} > {budget.limit}"
                assert got == want, subject

    return LedgerMachine


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKEND_PARAMS)
def test_the_ledger_matches_the_reference_model(backend_name: str, tmp_path: Path) -> None:
    spec = BACKENDS[backend_name]
    require_available(spec)
    run_state_machine_as_test(
        build_machine(spec, tmp_path),
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
