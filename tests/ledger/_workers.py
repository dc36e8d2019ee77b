"""Process entry points for the multi-process SQLite tests (importable by ``spawn`` children)."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded
from tokenward.ledger.sqlite import SQLiteLedger

TEAM = "red"


def user_subject(index: int) -> Subject:
    """The subject of worker ``index``: its own user, all in team red."""
    return Subject(team=TEAM, user=f"proc{index}")


def hammer(url: str, index: int, ops: int, start: Event, results: Any) -> None:
    """Reserve, then settle (at most the hold) or release, ``ops`` times; report the totals.

    Puts ``(index, admitted, denied, released, charged)`` on ``results``, ``charged`` as a string.
    """
    rng = random.Random(1000 + index)
    subject = user_subject(index)
    ledger = SQLiteLedger(url)
    admitted = denied = released = 0
    charged = Decimal(0)
    try:
        start.wait(60)
        for op in range(ops):
            hold = Decimal(rng.randint(10, 150)) / 100
            try:
                reservation = ledger.reserve(subject, {"cost_usd": hold})
            except BudgetExceeded:
                denied += 1
                continue
            if rng.random() < 0.2:
                ledger.release(reservation.id)
                released += 1
                continue
            charge = hold * rng.randint(0, 100) / 100
            ledger.settle(
                reservation.id,
                UsageEvent(
                    request_id=f"p{index}-{op}",
                    at=ledger.clock.now(),
                    subject=subject,
                    usage=Usage(input_tokens=10, output_tokens=1),
                    cost_usd=charge,
                    charged={"cost_usd": charge},
                ),
            )
            admitted += 1
            charged += charge
    finally:
        ledger.close()
    results.put((index, admitted, denied, released, str(charged)))


def reserve_then_die(url: str, amount: str, ttl_seconds: float, pipe: Connection) -> None:
    """Reserve ``amount`` for user proc0, send the reservation id, and die without cleanup."""
    ledger = SQLiteLedger(url)
    reservation = ledger.reserve(
        user_subject(0), {"cost_usd": Decimal(amount)}, ttl=timedelta(seconds=ttl_seconds)
    )
    pipe.send(reservation.id)
    os._exit(17)


def die_inside_a_transaction(url: str, pipe: Connection) -> None:
    """Write a hold inside the ledger's write transaction and die before it commits."""
    ledger = SQLiteLedger(url)
    with ledger._transaction():
        ledger._write_rows({("each-user", "proc0", ""): (Decimal(0), Decimal(999))})
        pipe.send("holding the write lock")
        os._exit(18)


SHARED = Subject(team="blue", user="shared")
"""The subject of the one-budget hammer: every process charges the same budget."""


def hammer_one_budget(url: str, index: int, ops: int, start: Event, results: Any) -> None:
    """``ops`` times: reserve 0.01-1.50 USD on the shared budget, then release (1 in 5) or settle
    a charge between 0 and the hold. Puts ``(index, admitted, denied, released, charged)``."""
    rng = random.Random(5000 + index)
    ledger = SQLiteLedger(url)
    admitted = denied = released = 0
    charged = Decimal(0)
    try:
        start.wait(60)
        for op in range(ops):
            hold = Decimal(rng.randint(1, 150)) / 100
            try:
                reservation = ledger.reserve(SHARED, {"cost_usd": hold}, idempotency_key=f"h{index}-{op}")
            except BudgetExceeded:
                denied += 1
                continue
            if rng.random() < 0.2:
                ledger.release(reservation.id)
                released += 1
                continue
            charge = (hold * rng.randint(0, 100) / 100).quantize(Decimal("0.0001"))
            ledger.settle(
                reservation.id,
                UsageEvent(
                    request_id=f"h{index}-{op}",
                    at=ledger.clock.now(),
                    subject=SHARED,
                    usage=Usage(input_tokens=10, output_tokens=1),
                    cost_usd=charge,
                    charged={"cost_usd": charge},
                ),
            )
            admitted += 1
            charged += charge
    finally:
        ledger.close()
    results.put((index, admitted, denied, released, str(charged)))


def watch_balances(path: str, budget: str, limit: str, stop: Event, results: Any) -> None:
    """From its own process and its own plain sqlite3 connection, read ``budget``'s balance rows
    over and over until ``stop``; put ``(samples, worst spent + held - limit)``."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    worst, samples, cap = Decimal("-Infinity"), 0, Decimal(limit)
    try:
        while not stop.is_set():
            for spent, held in conn.execute("SELECT spent, held FROM balances WHERE budget = ?", (budget,)):
                worst = max(worst, Decimal(spent) + Decimal(held) - cap)
            samples += 1
    finally:
        conn.close()
    results.put((samples, str(worst)))


def reserve_then_wait(
    url: str, amount: str, ttl_seconds: float, pipe: Connection, forwarded: bool = False
) -> None:
    """Reserve ``amount`` for user proc0 (for a call forwarded to a provider, with
    ``forwarded``), send the reservation id, then wait to be killed."""
    import time

    ledger = SQLiteLedger(url)
    marked = {"forwarded": True} if forwarded else {}
    reservation = ledger.reserve(
        user_subject(0),
        {"cost_usd": Decimal(amount)},
        ttl=timedelta(seconds=ttl_seconds),
        idempotency_key="req-killed",
        **marked,
    )
    pipe.send(reservation.id)
    time.sleep(600)


def settle_under_a_stalled_lock(url: str, calls: int, pipe: Connection, busy_timeout: float) -> None:
    """A guarded caller, as the gateway is one: admit call ``req-i`` (retrying while the file is
    locked: nothing was forwarded yet), tell the parent, wait for its go, settle it (a settle
    that fails is logged and dropped, as the gateway's relay does), tell the parent. The parent
    holds the file's lock over some settles, and kills this process during one."""
    from tokenward.core.decide import CallPlan
    from tokenward.errors import LedgerError
    from tokenward.guard import Guard, Outcome

    guard = Guard(SQLiteLedger(url, timeout=busy_timeout))
    subject = user_subject(0)
    for i in range(calls):
        plan = CallPlan(model="gpt-4o-mini", input_tokens=10, max_output_tokens=20)
        while True:
            try:
                admission = guard.admit(subject, plan, request_id=f"req-{i:02d}")
                break
            except LedgerError:
                continue
        pipe.send(("admitted", i))
        pipe.recv()  # go
        try:
            guard.settle(admission, Outcome(Usage(input_tokens=10, output_tokens=15)))
            pipe.send(("settled", i))
        except Exception as exc:  # the relay logs it and answers the client anyway
            pipe.send(("lost", i, str(exc)))
