"""A settled call leaves no reservation row behind (issue 17 item e): on a real SQLite file, 2,000
calls reserved and settled as the guard makes them leave the reservations table empty, and the
file grows per call by what the usage event takes (its row and index entries), nothing more.

Before, every reservation was kept (``state = settled``): the file grew by the event and a
reservation row per call.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger.helpers import T0
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.core.windows import Window
from tokenward.ledger.sqlite import SQLiteLedger

CALLS = 2_000
SUBJECT = Subject(user="bench", key="bench", session="growth")
BUDGETS = (  # bench/gateway.yaml's four: one on cost, one rolling over a minute
    Budget("session-tokens", "session", "total_tokens", Decimal(10**12)),
    Budget("user-usd-day", "user", "cost_usd", Decimal(10**6), subject_id="bench", window=Window("day")),
    Budget(
        "user-tokens-minute",
        "user",
        "total_tokens",
        Decimal(10**12),
        subject_id="bench",
        window=Window.parse("rolling:1m"),
    ),
    Budget(
        "user-requests-month", "user", "requests", Decimal(10**12), subject_id="bench", window=Window("month")
    ),
)
HOLD = {"total_tokens": Decimal(250), "cost_usd": Decimal("0.000105"), "requests": Decimal(1)}
CHARGED = {"total_tokens": Decimal(70), "cost_usd": Decimal("0.000042"), "requests": Decimal(1)}


def _call(ledger: SQLiteLedger, clock: ManualClock, n: int) -> None:
    """One call as the guard makes it: a forwarded hold under the request id, then its settle."""
    request_id = f"req-{n:06d}"
    reservation = ledger.reserve(
        SUBJECT, HOLD, idempotency_key=request_id, forwarded=True,
        metadata={"model": "gpt-4o-mini", "endpoint": "chat", "provider": "openai"},
    )  # fmt: skip
    usage = Usage(input_tokens=20, output_tokens=50)
    event = UsageEvent(
        request_id=request_id, at=clock.now(), subject=SUBJECT, usage=usage, model="gpt-4o-mini",
        provider="openai", endpoint="chat", cost_usd=CHARGED["cost_usd"], charged=CHARGED,
    )  # fmt: skip
    ledger.settle(reservation.id, event)
    clock.advance(timedelta(milliseconds=20))


def _measure(path: Path) -> tuple[int, int, int]:
    """(file bytes after a full checkpoint, bytes of the pages of usage_events and its indexes,
    rows in reservations), read from another connection as an operator would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            events = conn.execute(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'usage_events')"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # pragma: no cover - built without SQLITE_ENABLE_DBSTAT_VTAB
            pytest.skip("this SQLite has no dbstat table to size the events by")
        rows = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    return path.stat().st_size, int(events), int(rows)


@pytest.mark.sqlite
@pytest.mark.slow
def test_settled_calls_leave_no_reservation_rows_and_grow_the_file_by_their_events(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock(T0)
    ledger = SQLiteLedger(f"sqlite:///{path}", clock=clock)
    try:
        for budget in BUDGETS:
            ledger.put_budget(budget)
        for n in range(100):  # warm up: balance rows, rollups and template instances made
            _call(ledger, clock, n)
        size0, events0, rows0 = _measure(path)
        for n in range(100, 100 + CALLS):
            _call(ledger, clock, n)
        size1, events1, rows1 = _measure(path)
        page = ledger._conn().execute("PRAGMA page_size").fetchone()[0]  # type: ignore[attr-defined]
        assert len(ledger.events(limit=None)) == 100 + CALLS
    finally:
        ledger.close()

    assert rows0 == rows1 == 0  # every call's reservation was deleted by its settle
    grown, events_grown = size1 - size0, events1 - events0
    assert events_grown > 0
    # the file grows by the events' pages, give or take a few pages of the other tables
    assert grown <= events_grown + 8 * page, (grown / CALLS, events_grown / CALLS)
