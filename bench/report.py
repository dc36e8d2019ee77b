"""A chargeback report over 1,000,000 usage events in a SQLite ledger: time and peak memory.

    python bench/report.py [--events 1000000] [--keep /path/ledger.db]

The ledger is filled through the SQLite ledger's own event writer (batched transactions), then
each report runs in a fresh process so its peak RSS is its own. Side by side, in the same run:

* ``tokenward report chargeback --by user`` over every event (streamed rows);
* the same grouped by ``tag:team`` and ``day`` (tags read with SQLite's JSON functions);
* the naive way, ``ledger.events()`` into memory and then the same chargeback, over a 100,000-event
  slice (it would not be fair to ask it for a million), to compare per-event time and memory.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from common import save

from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger.sqlite import SQLiteLedger

START = datetime(2025, 11, 1, tzinfo=UTC)
MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-3-pro-preview", "deepseek-chat")


def fill(path: Path, n: int, seed: int = 7) -> float:
    """Write ``n`` events over 30 days; returns the seconds it took."""
    rng = random.Random(seed)
    ledger = SQLiteLedger(f"sqlite:///{path}")
    step = timedelta(days=30) / n
    started = time.perf_counter()
    batch = 20_000
    for first in range(0, n, batch):
        with ledger._transaction():
            for i in range(first, min(n, first + batch)):
                user = rng.randrange(1000)
                prompt = rng.randrange(200, 60_000)
                cached = rng.randrange(0, prompt)
                output = rng.randrange(10, 2000)
                cost = Decimal(rng.randrange(1, 5_000_000)) / 1_000_000_000
                ledger._insert_event(
                    UsageEvent(
                        request_id=f"req-{i}",
                        at=START + step * i,
                        subject=Subject(
                            user=f"user-{user}",
                            project=f"proj-{user % 40}",
                            session=f"s-{i // 200}",
                            tags=(("team", f"team-{user % 50}"),),
                        ),
                        usage=Usage(input_tokens=prompt, output_tokens=output, cache_read_tokens=cached),
                        model=MODELS[user % 4],
                        provider="openai",
                        endpoint="openai-chat",
                        cost_usd=cost,
                        charged={
                            "cost_usd": cost,
                            "total_tokens": Decimal(prompt + output),
                            "requests": Decimal(1),
                        },
                    )
                )
    ledger.close()
    return time.perf_counter() - started


_CHILD = """
import json, resource, sys, time
from datetime import datetime
from tokenward.observe.reports import chargeback
from tokenward.observe.rows import open_rows
url, dims, mode, since, until = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4], sys.argv[5]
since = datetime.fromisoformat(since) if since != "-" else None
until = datetime.fromisoformat(until) if until != "-" else None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "stream":
    from tokenward.observe.reports.chargeback import fields_for
    rows = open_rows(url).scan(since=since, until=until, need=fields_for(dims) | {"cache_read_tokens", "reasoning_tokens"})
else:
    from tokenward.ledger import open_ledger
    from tokenward.observe.rows import rows_from_events
    rows = rows_from_events(open_ledger(url).events(since=since, until=until))
report = chargeback(rows, dims)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "events": report.total.calls, "lines": len(report.lines),
                  "cost_usd": str(report.total.cost_usd), "peak_rss_mb": peak / 1024,
                  "rss_before_mb": base / 1024}))
"""


def run(url: str, dims: str, mode: str, since: str = "-", until: str = "-") -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, url, dims, mode, since, until],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="ledger file to reuse (filled when missing)")
    args = parser.parse_args()
    path = args.keep or Path(tempfile.mkdtemp()) / "ledger.db"
    results: dict[str, object] = {"events": args.events}
    if not path.exists():
        results["fill_s"] = fill(path, args.events)
    results["file_mb"] = path.stat().st_size / 2**20
    url = f"sqlite:///{path}"
    results["stream_by_user"] = run(url, "user", "stream")
    results["stream_by_team_day"] = run(url, "tag:team,day", "stream")
    # a 100,000-event slice, both ways
    slice_since = START.isoformat()
    slice_until = (START + timedelta(days=30) * 100_000 / args.events).isoformat()
    results["slice_stream_by_user"] = run(url, "user", "stream", slice_since, slice_until)
    results["slice_naive_by_user"] = run(url, "user", "naive", slice_since, slice_until)
    s, n = results["slice_stream_by_user"], results["slice_naive_by_user"]
    assert isinstance(s, dict) and isinstance(n, dict)
    assert s["cost_usd"] == n["cost_usd"] and s["events"] == n["events"]
    results["naive_over_stream_time"] = n["seconds"] / s["seconds"]
    results["naive_over_stream_peak_rss"] = n["peak_rss_mb"] / s["peak_rss_mb"]
    full = results["stream_by_user"]
    assert isinstance(full, dict)
    print(
        f"chargeback by user over {full['events']:,} events: {full['seconds']:.1f} s "
        f"({full['events'] / full['seconds']:,.0f} events/s), peak RSS {full['peak_rss_mb']:.0f} MB "
        f"(the process alone: {full['rss_before_mb']:.0f} MB)"
    )
    team = results["stream_by_team_day"]
    assert isinstance(team, dict)
    print(
        f"by tag:team and day: {team['seconds']:.1f} s, peak RSS {team['peak_rss_mb']:.0f} MB, {team['lines']:,} lines"
    )
    print(
        f"100k-event slice: ledger.events() then chargeback takes {results['naive_over_stream_time']:.2f}x the time "
        f"and {results['naive_over_stream_peak_rss']:.2f}x the peak memory of the streamed report"
    )
    print(f"saved {save('report', results)}")


if __name__ == "__main__":
    main()
