"""Ledger throughput: admit (decide + reserve) plus settle, per second and p50/p99 latency, for
``memory://`` and ``sqlite://`` with 1 and 8 processes, in one run; and the SQL statements one
admit plus settle costs on SQLite.

    python bench/ledger.py [--ops 2000] [--processes 1 8]

Every call is charged to three budgets at once (a per-user template, a fixed team budget, a
per-session template), limits high enough never to deny. With 8 processes the SQLite ones share
one file (so they contend for its single writer lock); memory ledgers cannot be shared between
processes, so each of the 8 has its own (the figure shows the parallel ceiling without contention).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import save, summary

from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import Ledger, open_ledger

PLAN = CallPlan(
    "bench-model", input_tokens=1000, max_output_tokens=500, input_rate=Decimal(3), output_rate=Decimal(15)
)
CHARGED = {"total_tokens": Decimal(1200), "cost_usd": Decimal("0.006"), "requests": Decimal(1)}
BUDGETS = (
    Budget("each-user", "user", "total_tokens", Decimal(10**15)),
    Budget("team-red", "team", "cost_usd", Decimal(10**12), subject_id="red"),
    Budget("each-session", "session", "requests", Decimal(10**12)),
)


def setup(url: str) -> None:
    ledger = open_ledger(url)
    for budget in BUDGETS:
        ledger.put_budget(budget)
    ledger.close()


def pairs(ledger: Ledger, index: int, ops: int, first: int = 0) -> list[float]:
    """``ops`` admit + settle pairs (request ids from ``first``); each pair's latency, in seconds."""
    subject = Subject(team="red", user=f"u{index % 4}", session=f"s{index}")
    out = []
    for op in range(first, first + ops):
        request_id = f"p{index}-{op}"
        start = time.perf_counter()
        _, reservation = ledger.admit(subject, PLAN, idempotency_key=request_id)
        ledger.settle(
            reservation.id,
            UsageEvent(
                request_id,
                ledger.clock.now(),
                subject,
                Usage(1000, 200),
                charged=CHARGED,
                cost_usd=CHARGED["cost_usd"],
            ),
        )
        out.append(time.perf_counter() - start)
    return out


def worker(url: str, index: int, ops: int, start: Any, results: Any) -> None:
    if url.startswith("memory"):
        ledger = open_ledger(url)
        for budget in BUDGETS:
            ledger.put_budget(budget)
    else:
        ledger = open_ledger(url)
    pairs(ledger, index, 20, first=ops)  # warm up: connection, caches, template instances
    start.wait(60)
    began = time.perf_counter()
    latencies = pairs(ledger, index, ops)
    results.put((began, time.perf_counter(), latencies))
    ledger.close()


def measure(url: str, processes: int, ops: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, i, ops, start, results)) for i in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(2.0)  # let every process import and warm up
    start.set()
    reports = [results.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join(60)
    seconds = max(r[1] for r in reports) - min(r[0] for r in reports)
    return summary([x for r in reports for x in r[2]], seconds)


def statements(url: str) -> int:
    """SQL statements of one admit + settle (after a first one warmed the caches)."""
    ledger = open_ledger(url)
    seen: list[str] = []
    try:
        pairs(ledger, 98, 1)  # first use: connection, caches, template instances
        ledger._conn().set_trace_callback(seen.append)  # type: ignore[attr-defined]
        pairs(ledger, 98, 1, first=1)
        ledger._conn().set_trace_callback(None)  # type: ignore[attr-defined]
    finally:
        ledger.close()
    return len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=2000, help="admit + settle pairs per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            for backend in ("memory", "sqlite"):
                url = (
                    "memory://" if backend == "memory" else f"sqlite:///{Path(tmp) / f'bench-{processes}.db'}"
                )
                if backend == "sqlite":
                    setup(url)
                result = measure(url, processes, args.ops)
                rows.append({"backend": backend, "processes": processes, **result})
        sql = f"sqlite:///{Path(tmp) / 'statements.db'}"
        setup(sql)
        count = statements(sql)
    print(f"{'backend':8} {'procs':>5} {'pairs/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['backend']:8} {row['processes']:>5} {row['rps']:>10.0f} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}"
        )
    by = {(r["backend"], r["processes"]): r for r in rows}
    for processes in args.processes:
        memory, sqlite = by[("memory", processes)], by[("sqlite", processes)]
        print(f"{processes} process(es): sqlite/memory p50 {sqlite['p50_ms'] / memory['p50_ms']:.1f}x")
    print(f"SQL statements per admit + settle on SQLite (3 budgets apply): {count}")
    path = save("ledger", {"ops_per_process": args.ops, "results": rows, "sqlite_statements_per_pair": count})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
