"""Denials (issue 15 item 9): every refused call is recorded, listed newest first, filtered, and a
flood past the rate is folded into one counted record per subject, budget and minute."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.ledger.helpers import T0, D
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.errors import BudgetExceeded, Stopped, UnpricedCall, ValidationError
from tokenward.ledger import Denial, Ledger

ALICE = Subject(org="acme", project="p1", user="alice", key="k-alice", tags=(("cc", "42"),))
BOB = Subject(org="acme", project="p2", user="bob", key="k-bob")


def _exceeded(budget: str = "alice-daily", requested: str = "40") -> BudgetExceeded:
    return BudgetExceeded(
        budget=budget,
        scope="user",
        subject_id="alice",
        meter="total_tokens",
        limit=D(100),
        used=D(70),
        held=D(5),
        requested=D(requested),
        reset_at=T0 + timedelta(hours=12),
        window="day",
    )


def _denial(error: BudgetExceeded | UnpricedCall, subject: Subject, at: object, rid: str) -> Denial:
    return Denial.of(
        error,
        subject,
        at,  # type: ignore[arg-type]
        model="gpt-5",
        request_id=rid,
        estimate={"input_tokens": D(30), "output_tokens": D(10), "total_tokens": D(40)},
        endpoint="openai.chat",
        provider="openai",
    )


def test_a_denial_is_recorded_with_who_which_budget_the_estimate_and_when(ledger: Ledger) -> None:
    ledger.record_denial(_denial(_exceeded(), ALICE, T0, "req-1"))
    (d,) = ledger.denials()
    assert d.id > 0 and d.at == T0 and d.subject == ALICE
    assert (d.budget, d.scope, d.subject_id, d.meter, d.window) == (
        "alice-daily",
        "user",
        "alice",
        "total_tokens",
        "day",
    )
    assert (d.limit, d.used, d.held, d.requested) == (D(100), D(70), D(5), D(40))
    assert d.reset_at == T0 + timedelta(hours=12)
    assert (d.reason, d.model, d.request_id, d.key) == ("budget_exceeded", "gpt-5", "req-1", "k-alice")
    assert d.estimate == {"input_tokens": D(30), "output_tokens": D(10), "total_tokens": D(40)}
    assert (d.endpoint, d.provider, d.count, d.aggregated, d.last_at) == (
        "openai.chat",
        "openai",
        1,
        False,
        T0,
    )
    assert Denial.from_dict(d.to_dict()) == d


def test_stopped_and_unpriced_refusals_say_why(ledger: Ledger) -> None:
    stopped = Stopped(
        stopped_scope="session", stopped_id="s1", stopped_at=T0,
        budget="each-session", scope="session", subject_id="s1", meter="total_tokens",
        limit=D(10), used=D(10), held=D(0), requested=D(0), reset_at=None,
    )  # fmt: skip
    ledger.record_denial(_denial(stopped, ALICE, T0, "req-s"))
    ledger.record_denial(Denial.of(UnpricedCall("mystery-1", "usd-cap"), BOB, T0, request_id="req-u"))
    unpriced, stop = ledger.denials()
    assert (stop.reason, stop.budget, stop.subject_id) == ("stopped", "each-session", "s1")
    assert (unpriced.reason, unpriced.budget, unpriced.model, unpriced.meter) == (
        "unpriced",
        "usd-cap",
        "mystery-1",
        "cost_usd",
    )
    assert unpriced.limit is None and unpriced.requested is None


def test_denials_are_listed_newest_first_filtered_and_paged(ledger: Ledger) -> None:
    for i in range(4):
        ledger.record_denial(_denial(_exceeded(), ALICE, T0 + timedelta(minutes=i), f"a{i}"))
    ledger.record_denial(_denial(_exceeded("bob-daily"), BOB, T0 + timedelta(minutes=1, seconds=30), "b0"))
    assert [d.request_id for d in ledger.denials()] == ["b0", "a3", "a2", "a1", "a0"]
    assert [d.request_id for d in ledger.denials(limit=2, offset=1)] == ["a3", "a2"]
    assert [d.request_id for d in ledger.denials(limit=None, offset=4)] == ["a0"]
    assert [d.request_id for d in ledger.denials(subject=Subject(user="bob"))] == ["b0"]
    assert [d.request_id for d in ledger.denials(subject=Subject(project="p1"), limit=1)] == ["a3"]
    assert [d.request_id for d in ledger.denials(subject=Subject(tags=(("cc", "42"),)), offset=2)] == [
        "a1",
        "a0",
    ]
    assert ledger.denials(subject=Subject(tags=(("cc", "43"),))) == []
    assert [d.request_id for d in ledger.denials(budget="bob-daily")] == ["b0"]
    window = ledger.denials(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert [d.request_id for d in window] == ["b0", "a2", "a1"]  # since inclusive, until exclusive


def test_a_flood_past_the_rate_is_folded_into_one_count_per_subject_budget_and_minute(
    ledger: Ledger, clock: ManualClock
) -> None:
    ledger.denial_rate = 3  # type: ignore[attr-defined]
    for i in range(10):  # ten refusals of alice within one minute
        ledger.record_denial(_denial(_exceeded(), ALICE, T0 + timedelta(seconds=5 * i), f"a{i}"))
    ledger.record_denial(_denial(_exceeded(), BOB, T0 + timedelta(seconds=7), "b0"))  # another subject
    ledger.record_denial(_denial(_exceeded(), ALICE, T0 + timedelta(minutes=1), "a-next"))  # next minute
    found = ledger.denials(limit=None)
    assert sum(d.count for d in found) == 12  # none dropped
    folded = [d for d in found if d.aggregated]
    assert len(folded) == 1
    (agg,) = folded
    # the first 3 of alice's minute one by one; the 4th..10th (7 refusals) folded, first at 15 s
    assert (agg.count, agg.request_id, agg.at, agg.last_at) == (
        7,
        "a3",
        T0 + timedelta(seconds=15),
        T0 + timedelta(seconds=45),
    )
    singles = sorted(d.request_id for d in found if not d.aggregated)  # type: ignore[type-var]
    assert singles == ["a-next", "a0", "a1", "a2", "b0"]
    assert sum(d.count for d in ledger.denials(subject=Subject(user="alice"), limit=None)) == 11


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": -1},
        {"offset": -2},
        {"limit": "10"},
        {"since": "yesterday"},
        {"subject": "alice"},
        {"budget": 3},
    ],
)
def test_bad_arguments_are_refused(ledger: Ledger, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ledger.denials(**kwargs)  # type: ignore[arg-type]


def test_decimal_figures_survive_the_store_exactly(ledger: Ledger) -> None:
    error = _exceeded(requested="0.000000123")
    ledger.record_denial(_denial(error, ALICE, T0, "tiny"))
    (d,) = ledger.denials()
    assert d.requested == Decimal("0.000000123")


@pytest.mark.sqlite
def test_a_denial_the_file_cannot_take_now_waits_in_the_spool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from tokenward.ledger.sqlite import SQLiteLedger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = SQLiteLedger(url, timeout=0.2)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=10)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy time-out
        spooled = ledger.record_denial(_denial(_exceeded(), ALICE, T0, "req-locked"))
        assert spooled.id == 0  # not stored yet, not lost either
        blocker.execute("ROLLBACK")
        assert ledger.flush(10) == 0  # type: ignore[attr-defined]
        assert [d.request_id for d in ledger.denials()] == ["req-locked"]
    finally:
        blocker.close()
        ledger.close()


def test_denials_are_filtered_by_the_model_a_subject_names(ledger: Ledger) -> None:
    ledger.record_denial(_denial(_exceeded(), ALICE.with_model("openai/gpt-5"), T0, "on-gpt-5"))
    ledger.record_denial(_denial(_exceeded(), ALICE, T0, "no-model"))
    assert [d.request_id for d in ledger.denials(subject=Subject(user="alice").with_model("gpt-5"))] == [
        "on-gpt-5"
    ]
    assert [d.request_id for d in ledger.denials(subject=Subject(user="alice"), limit=1)] == ["no-model"]
