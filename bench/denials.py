"""What the gateway pays per denial (issue 15 item 9): the latency of a refused call (402, recorded
in the ledger) against an admitted one through the same gateway (SQLite ledger, fake provider),
interleaved rounds at 1 and 50 concurrent clients; then the ledger write a denial adds, alone
(``Ledger.record_denial`` on SQLite: a denial stored one by one, and one folded into its
minute's aggregated record past the flood rate); and a check that a flood loses no refusal (the
recorded counts add up to the refusals sent).

    python bench/denials.py [--requests 400] [--concurrency 1 50] [--rounds 3] [--writes 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from common import TOKENWARD, free_port, percentile, process, save, summary

from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Denial, open_ledger

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
    "max_tokens": 100,
}


async def _load(
    url: str, headers: dict[str, str], requests: int, concurrency: int, expect: int
) -> dict[str, float]:
    """``requests`` calls from ``concurrency`` clients; each must answer ``expect``."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    wrong = 0
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal wrong
            for _ in range(max(1, requests // concurrency)):
                start = time.perf_counter()
                answer = await client.post(url, json=BODY, headers=headers)
                latencies.append(time.perf_counter() - start)
                wrong += answer.status_code != expect

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {**summary(latencies, time.perf_counter() - start), "unexpected_status": wrong}


def load(url: str, headers: dict[str, str], requests: int, concurrency: int, expect: int) -> dict[str, float]:
    return asyncio.run(_load(url, headers, requests, concurrency, expect))


def _config(work: Path, fake_port: int) -> dict[str, object]:
    return {
        "ledger": f"sqlite:///{work / 'ledger.db'}",
        "upstreams": [{"name": "fake", "provider": "fake", "base_url": f"http://127.0.0.1:{fake_port}"}],
        "keys": [
            {"key": "tw-admitted", "name": "admitted", "user": "admitted"},
            {"key": "tw-refused", "name": "refused", "user": "refused"},
        ],
        "budgets": [
            {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 10**12},
            # every call of user "refused" needs more than 1 token: always a 402
            {"name": "refused-cap", "scope": "user", "id": "refused", "meter": "total_tokens", "limit": 1},
        ],
    }


def record_writes(work: Path, n: int) -> dict[str, float]:
    """p50 of ``record_denial`` on SQLite, stored one by one and folded past the rate."""
    clock = ManualClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
    ledger = open_ledger(f"sqlite:///{work / 'writes.db'}", clock=clock)
    error = BudgetExceeded(
        budget="cap", scope="user", subject_id="u", meter="total_tokens", limit=Decimal(1),
        used=Decimal(1), held=Decimal(0), requested=Decimal(30), reset_at=None, window="day",
    )  # fmt: skip
    out: dict[str, float] = {}
    try:
        for mode in ("one_by_one", "folded"):
            ledger.denial_rate = 10**9 if mode == "one_by_one" else 0  # type: ignore[attr-defined]
            times = []
            for i in range(n):
                denial = Denial.of(error, Subject(user=f"{mode}-u"), clock.now(), request_id=f"{mode}-{i}")
                start = time.perf_counter()
                ledger.record_denial(denial)
                times.append(time.perf_counter() - start)
                if mode == "one_by_one" and i % 50 == 49:
                    clock.advance(timedelta(minutes=1))
            out[f"{mode}_p50_ms"] = percentile(times, 0.5) * 1000
            out[f"{mode}_p99_ms"] = percentile(times, 0.99) * 1000
    finally:
        ledger.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tw-bench-denials-"))
    fake_port, gw_port = free_port(), free_port()
    (work / "gateway.json").write_text(json.dumps(_config(work, fake_port)))
    fake_args = [*TOKENWARD, "fake-provider", "--port", str(fake_port), "--reply-tokens", "50"]
    gw_args = [*TOKENWARD, "serve", "--config", str(work / "gateway.json"), "--port", str(gw_port)]
    gw_args += ["--log-level", "warning"]
    url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    targets = {
        "admitted": {"authorization": "Bearer tw-admitted", "x-tokenward-session": "bench"},
        "refused": {"authorization": "Bearer tw-refused", "x-tokenward-session": "bench"},
    }
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    sent_refused = 0
    with (
        process(fake_args, f"http://127.0.0.1:{fake_port}/healthz", work / "fake.log"),
        process(gw_args, f"http://127.0.0.1:{gw_port}/healthz", work / "gateway.log"),
    ):
        load(url, targets["admitted"], 50, 5, 200)  # warm up
        for concurrency in args.concurrency:
            key = f"c={concurrency}"
            results[key] = {"admitted": [], "refused": []}
            requests = max(args.requests, concurrency * 2)
            for _ in range(args.rounds):
                for name, headers in targets.items():
                    run = load(url, headers, requests, concurrency, 402 if name == "refused" else 200)
                    results[key][name].append(run)
                    if name == "refused":
                        sent_refused += int(run["requests"])
    ledger = open_ledger(f"sqlite:///{work / 'ledger.db'}")
    try:
        found = ledger.denials(limit=None)
    finally:
        ledger.close()
    recorded = sum(d.count for d in found)
    folded = sum(d.count for d in found if d.aggregated)

    table: dict[str, object] = {}
    print(
        f"{'clients':<10}{'admitted p50':>14}{'refused p50':>13}{'ratio':>7}{'admitted rps':>14}{'refused rps':>13}"
    )
    for key, runs in results.items():
        best = {n: {m: sorted(r[m] for r in rs)[len(rs) // 2] for m in rs[0]} for n, rs in runs.items()}
        a, r = best["admitted"], best["refused"]
        table[key] = {"admitted": a, "refused": r, "refused_over_admitted_p50": r["p50_ms"] / a["p50_ms"]}
        print(
            f"{key:<10}{a['p50_ms']:>12.2f}ms{r['p50_ms']:>11.2f}ms{r['p50_ms'] / a['p50_ms']:>7.2f}"
            f"{a['rps']:>14.0f}{r['rps']:>13.0f}"
        )
    writes = record_writes(work, args.writes)
    table["record_denial_sqlite"] = writes
    table["flood"] = {
        "refusals_sent": sent_refused,
        "refusals_recorded": recorded,
        "folded": folded,
        "records": len(found),
    }
    print(
        f"record_denial on SQLite: p50 {writes['one_by_one_p50_ms']:.3f} ms one by one, "
        f"{writes['folded_p50_ms']:.3f} ms folded (p99 {writes['one_by_one_p99_ms']:.3f} / {writes['folded_p99_ms']:.3f})"
    )
    print(
        f"flood: {sent_refused:,} refusals sent, {recorded:,} recorded in {len(found):,} records "
        f"({folded:,} folded into per-minute counts)"
    )
    print(f"(median of {args.rounds} interleaved rounds; results in {save('denials', table)})")


if __name__ == "__main__":
    main()
