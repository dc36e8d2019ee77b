"""Time to replay a recorded trace file (goal for the Gemini file: under a minute), on memory://
and on a SQLite file, in one run.

    python bench/replay.py [TRACES.jsonl] [--budget SPEC]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, save

from tokenward.core.budgets import parse_budget_spec
from tokenward.replay import read_traces, replay

DEFAULT = ROOT.parent / "shared" / "data" / "traces" / "gemini3pro-swebench-verified.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("traces", nargs="?", default=str(DEFAULT))
    parser.add_argument("--budget", action="append", default=["session:cost_usd=0.50"])
    args = parser.parse_args()
    start = time.perf_counter()
    calls = read_traces(args.traces)
    parsed = time.perf_counter() - start
    budgets = [parse_budget_spec(spec) for spec in args.budget]
    rows = {"parse_s": parsed, "calls": len(calls)}
    for label, url in (
        ("memory", "memory://"),
        ("sqlite", f"sqlite:///{Path(tempfile.mkdtemp()) / 'replay.db'}"),
    ):
        start = time.perf_counter()
        report = replay(calls, budgets, ledger=url)
        rows[f"{label}_replay_s"] = time.perf_counter() - start
        rows[f"{label}_sessions_cut"] = report.totals()["sessions_cut"]
    print(
        f"{Path(args.traces).name}: {len(calls):,} calls; parse {parsed:.2f} s; replay on memory:// "
        f"{rows['memory_replay_s']:.2f} s, on sqlite {rows['sqlite_replay_s']:.2f} s "
        f"(parse + replay, sqlite: {parsed + rows['sqlite_replay_s']:.2f} s; goal < 60 s)"
    )
    save("replay", rows)


if __name__ == "__main__":
    main()
