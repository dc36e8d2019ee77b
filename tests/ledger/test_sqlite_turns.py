"""Turns at SQLite's write lock (tokenward.ledger.sqlite.turns, issue 17).

Two processes writing one SQLite file all the time: with SQLite's busy handler alone a waiter
sleeps 25-100 ms at a time and keeps missing the moment the lock is free (p99 over a second at ten
clients on two workers). A turn is waited for without those sleeps; a holder that dies gives it up
at once (the kernel drops its flock); one that holds it past the busy time-out delays the others by
the time-out, never forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tokenward.ledger.sqlite import SQLiteLedger
from tokenward.ledger.sqlite.turns import WriteTurns

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"{path}-turn", str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_turn_held_by_another_process_is_had_as_soon_as_it_is_given_back(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "l.db", timeout=10)
    holder = _holder(tmp_path / "l.db", 0.3)
    started = time.monotonic()
    assert turns.take()
    waited = time.monotonic() - started
    turns.give_back()
    holder.wait()
    assert 0.2 < waited < 0.3 + 0.1  # woken within a few ms of the holder's exit, not 100 ms later


def test_a_dead_holder_gives_its_turn_up_at_once(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "l.db", timeout=10)
    holder = _holder(tmp_path / "l.db", 60)
    threading.Timer(0.2, lambda: os.kill(holder.pid, signal.SIGKILL)).start()
    started = time.monotonic()
    assert turns.take()
    assert time.monotonic() - started < 1
    turns.give_back()
    holder.wait()


def test_a_stuck_holder_delays_a_write_by_the_busy_timeout_not_forever(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'l.db'}?timeout=0.5")
    holder = _holder(tmp_path / "l.db", 60)  # holds the turn, not SQLite's lock
    try:
        started = time.monotonic()
        ledger.audit("ops", "test", "t")  # a write transaction: goes ahead after the time-out
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert 0.5 <= waited < 2
    assert [e.action for e in ledger.audit_log()] == ["test"]
    ledger.close()


def test_threads_of_one_process_take_turns_too(tmp_path: Path) -> None:
    turns = WriteTurns(tmp_path / "l.db", timeout=10)
    inside, overlaps = [0], []

    def work() -> None:
        for _ in range(200):
            assert turns.take()
            inside[0] += 1
            overlaps.append(inside[0])
            inside[0] -= 1
            turns.give_back()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 800
