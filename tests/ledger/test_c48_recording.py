"""C48: a settle whose ledger write fails after the answer went to the client.

The embedded ledger keeps the failed settle itself (issue 14): a settle that cannot take SQLite's
write lock within the busy time-out is appended to the spool beside the ledger file and replayed
until it lands, so the caller never loses it. While it waits, nothing changed in the ledger: the
call's reservation stays active and its hold keeps counting toward admission. Once the lock is
free the spool lands it exactly once, and replaying the same settle again (idempotent by request
id) changes nothing.

Failures are real: another connection holds SQLite's write lock while the ledger, opened with a
short busy timeout, tries to settle req-04 and req-07.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.ledger.helpers import D, cost_budget, event, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = [pytest.mark.sqlite]

KEY = Subject(key="key-fx48")
START = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)
FAILING = {"req-04", "req-07"}


def _pending(ledger: SQLiteLedger) -> list[str]:
    """Request ids waiting in the ledger's spool (read from the spool file itself)."""
    if not ledger.spool_path.exists():
        return []
    conn = sqlite3.connect(ledger.spool_path)
    try:
        rows = conn.execute("SELECT payload FROM spool WHERE kind = 'settle' ORDER BY id").fetchall()
    finally:
        conn.close()
    return [json.loads(payload)["event"]["request_id"] for (payload,) in rows]


def test_c48_failed_settles_keep_counting_and_apply_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock(START)
    ledger = SQLiteLedger(f"sqlite:///{path}", clock=clock, timeout=0.05)
    ledger.put_budget(cost_budget("key-usd", "key", "1.00", "key-fx48"))
    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    settles: list[tuple[str, UsageEvent]] = []
    try:
        for n in range(1, 11):
            clock.set(START + timedelta(seconds=n))
            request_id = f"req-{n:02d}"
            reservation = ledger.reserve(KEY, usd("0.02"), idempotency_key=request_id)
            settled = event(KEY, usd("0.02"), at=clock.now(), request_id=request_id)
            settles.append((reservation.id, settled))
            if request_id not in FAILING:
                ledger.settle(reservation.id, settled)
                continue
            blocker.execute("BEGIN IMMEDIATE")  # someone else holds the write lock
            try:
                assert ledger.settle(reservation.id, settled).request_id == request_id  # no error
                # before recovery: the settle waits in the spool, the ledger is unchanged: the
                # admission counter counts this call (held), the durable spend does not
                assert request_id in _pending(ledger)
                assert ledger.reservation(reservation.id).state == "active"  # type: ignore[union-attr]
                spent, held = spent_held(ledger, KEY, "key-usd")
                assert spent + held == D("0.02") * n
                assert request_id not in {e.request_id for e in ledger.events()}
            finally:
                blocker.execute("ROLLBACK")

        # the store is healthy again at 10:01:10: the spool lands what waited, exactly once
        clock.set(datetime(2025, 6, 1, 10, 1, 10, tzinfo=UTC))
        assert ledger.flush(10) == 0 and _pending(ledger) == []
        assert spent_held(ledger, KEY, "key-usd") == (D("0.20"), D("0"))
        for _ in range(2):  # replaying every settle again changes nothing
            for reservation_id, settled in settles:
                ledger.settle(reservation_id, settled)
        assert spent_held(ledger, KEY, "key-usd") == (D("0.20"), D("0"))
        events = ledger.events()
        assert len(events) == 10 and len({e.request_id for e in events}) == 10
        assert sum((e.cost_usd or D(0) for e in events), D(0)) == D("0.20")
    finally:
        blocker.close()
        ledger.close()
