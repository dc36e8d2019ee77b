"""A stalled SQLite lock loses no event (issue 14, item 6).

Another writer holds the ledger file's lock longer than the ledger's short busy time-out
(0.2 s) while a guarded caller in another process settles its calls; during the last
lock the caller is killed with SIGKILL, mid-settle; the ledger is then opened again (a restart).
On the branch point the settles that met the lock failed and vanished (6 of the 20 here, and the
killed one left a hold that expired uncharged); now they wait in the spool beside the ledger and
land, and the killed call's forwarded hold is charged at the restart: every call has its event.

Each call holds 10 + 20 = 30 tokens and is settled at 10 + 15 = 25 (the usage it reports).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger import _workers
from tokenward.core.budgets import Budget
from tokenward.ledger.sqlite import SQLiteLedger

pytestmark = [pytest.mark.sqlite, pytest.mark.slow]

SPAWN = multiprocessing.get_context("spawn")
CALLS = 20
STALLED = {1, 4, 7, 10, 13, 16}  # six settles meet another writer's lock
BUSY_TIMEOUT = 0.2  # seconds the caller's ledger waits for the lock
LOCK_SECONDS = 0.6  # three times the busy time-out


def test_no_settle_is_lost_to_a_stalled_lock_nor_to_a_kill_during_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    setup = SQLiteLedger(url)
    setup.put_budget(Budget("each-user", "user", "total_tokens", Decimal(100000)))
    setup.close()

    receive, send = SPAWN.Pipe()
    child = SPAWN.Process(target=_workers.settle_under_a_stalled_lock, args=(url, CALLS, send, BUSY_TIMEOUT))
    child.start()
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=10)
    outcomes: dict[int, str] = {}
    try:
        for i in range(CALLS):
            assert receive.poll(60) and receive.recv() == ("admitted", i)
            last = i == CALLS - 1
            if i in STALLED or last:
                blocker.execute("BEGIN IMMEDIATE")  # another writer: a long transaction
                receive.send("go")
                if last:  # killed while its settle waits for the lock
                    time.sleep(0.1)
                    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
                    child.join(30)
                    time.sleep(LOCK_SECONDS)
                    blocker.execute("ROLLBACK")
                    break
                time.sleep(LOCK_SECONDS)
                blocker.execute("ROLLBACK")
            else:
                receive.send("go")
            assert receive.poll(60), "the caller never answered"
            message = receive.recv()
            outcomes[i] = message[0]
    finally:
        blocker.close()
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    # every settle the caller made returned (the branch point: six raised "database is locked")
    assert [i for i, outcome in outcomes.items() if outcome != "settled"] == []

    restarted = SQLiteLedger(url, timeout=5)  # replays the spool, reclaims the killed process's hold
    try:
        assert restarted.flush(30) == 0
        events = {e.request_id: e for e in restarted.events()}
        assert sorted(events) == [f"req-{i:02d}" for i in range(CALLS)]  # 0 lost
        assert all(events[f"req-{i:02d}"].status == "ok" for i in range(CALLS - 1))
        # the killed call: its hold charged at the restart (or, had its settle been spooled
        # before the kill, that settle)
        killed = events[f"req-{CALLS - 1:02d}"]
        assert killed.status in ("reclaimed", "ok")
        (balance,) = restarted.balances(_workers.user_subject(0))
        # 19 settled at 25 tokens; the killed one charged its 30-token hold (25 if settled)
        last = 30 if killed.status == "reclaimed" else 25
        assert (balance.spent, balance.held) == (Decimal(19 * 25 + last), Decimal(0))
    finally:
        restarted.close()
