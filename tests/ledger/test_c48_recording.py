"""C48: a settle whose ledger write fails after the answer went to the client.

In the embedded ledger the admission counters and the durable events live in one SQLite
transaction, so they cannot disagree: a failed settle changes nothing, the call's reservation
stays active and its hold keeps counting toward admission (for its time to live), and replaying
the settle later applies it exactly once, however many times it is replayed (idempotent by
request id; a settle after expiry still charges). Queuing the failed settle durably and replaying
it (the spool) is the caller's part: issue 8's. Here the test keeps the failed settles in a list.

Failures are real: another connection holds SQLite's write lock while the ledger, opened with a
short busy timeout, tries to settle req-04 and req-07.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.ledger.helpers import D, cost_budget, event, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import LedgerError
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = [pytest.mark.sqlite]

KEY = Subject(key="key-fx48")
START = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)
FAILING = {"req-04", "req-07"}


def test_c48_failed_settles_keep_counting_and_apply_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock(START)
    ledger = SQLiteLedger(f"sqlite:///{path}", clock=clock, timeout=0.05)
    ledger.put_budget(cost_budget("key-usd", "key", "1.00", "key-fx48"))
    blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
    spool: list[tuple[str, UsageEvent]] = []
    try:
        for n in range(1, 11):
            clock.set(START + timedelta(seconds=n))
            request_id = f"req-{n:02d}"
            reservation = ledger.reserve(KEY, usd("0.02"), idempotency_key=request_id)
            settled = event(KEY, usd("0.02"), at=clock.now(), request_id=request_id)
            if request_id in FAILING:
                blocker.execute("BEGIN IMMEDIATE")  # someone else holds the write lock
                with pytest.raises(LedgerError, match="locked"):
                    ledger.settle(reservation.id, settled)
                blocker.execute("ROLLBACK")
                spool.append((reservation.id, settled))  # the response already went out
                continue
            ledger.settle(reservation.id, settled)

        # before recovery: the admission counter counts all ten, the durable spend eight
        spent, held = spent_held(ledger, KEY, "key-usd")
        assert (spent + held, spent, held) == (D("0.20"), D("0.16"), D("0.04"))
        assert [e.request_id for e in ledger.events()] == [
            f"req-{n:02d}" for n in range(1, 11) if f"req-{n:02d}" not in FAILING
        ]
        assert sorted(e.request_id for _, e in spool) == ["req-04", "req-07"]
        for reservation_id, _ in spool:
            assert ledger.reservation(reservation_id).state == "active"  # type: ignore[union-attr]

        # the store is healthy again at 10:01:10: the spool is replayed, twice
        clock.set(datetime(2025, 6, 1, 10, 1, 10, tzinfo=UTC))
        for _ in range(2):
            for reservation_id, settled in spool:
                ledger.settle(reservation_id, settled)
        assert spent_held(ledger, KEY, "key-usd") == (D("0.20"), D("0"))
        events = ledger.events()
        assert len(events) == 10 and len({e.request_id for e in events}) == 10
        assert sum((e.cost_usd or D(0) for e in events), D(0)) == D("0.20")
    finally:
        blocker.close()
        ledger.close()
