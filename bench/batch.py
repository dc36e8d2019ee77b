"""Batch jobs: how much of what the budget can pay for a job completes, against an exact replay
of the file in file order (issue 19: at least 95%), by budget share and concurrency; and the
records per second. The fake provider runs in another process; SQLite ledger.

    python bench/batch.py [--records 1000] [--shares 0.2,0.4,0.8] [--concurrency 1,8,32]

The replay charges each record what the fake provider bills it (its prompt's ``\\w+|[^\\w\\s]``
pieces plus 4, and the 20-token reply) and takes a record when it still fits, in file order.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from common import TOKENWARD, free_port, process, save

import tokenward
from tokenward.batch import run
from tokenward.batch.http import HttpCaller

REPLY = 20


def records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        words = " ".join(["word"] * (3 + (i * 7) % 40))
        out.append(
            {
                "custom_id": f"r-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": REPLY,
                    "messages": [{"role": "user", "content": words}],
                },
            }
        )
    return out


def cost(record: dict) -> int:
    return len(re.findall(r"\w+|[^\w\s]", record["body"]["messages"][0]["content"])) + 4 + REPLY


def replay(items: list[dict], limit: int) -> int:
    spent = done = 0
    for r in items:
        if spent + cost(r) <= limit:
            spent, done = spent + cost(r), done + 1
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--shares", default="0.2,0.4,0.8")
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tw-bench-batch-"))
    items = records(args.records)
    source = work / "requests.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in items))
    total = sum(cost(r) for r in items)
    port = free_port()
    rows = []
    with process(
        [*TOKENWARD, "fake-provider", "--port", str(port)],
        f"http://127.0.0.1:{port}/healthz",
        work / "fake.log",
    ):
        for share in (float(s) for s in args.shares.split(",")):
            limit = int(total * share)
            paid = replay(items, limit)
            for conc in (int(c) for c in args.concurrency.split(",")):
                name = f"s{share}-c{conc}"
                guard = tokenward.Guard(f"sqlite:///{work / (name + '.db')}", on_unattributed="ignore")
                caller = HttpCaller(guard, f"http://127.0.0.1:{port}/v1")
                start = time.perf_counter()
                try:
                    report = run(source, caller, guard=guard, budget=f"total_tokens={limit}", job=name,
                                 concurrency=conc, out=work / f"{name}.jsonl")  # fmt: skip
                finally:
                    caller.close()
                    guard.close()
                seconds = time.perf_counter() - start
                spent = report.budgets[0].spent
                row = {
                    "share": share, "concurrency": conc, "replay_pays_for": paid, "completed": report.succeeded,
                    "of_replay": round(report.succeeded / paid, 4) if paid else None,
                    "spent": str(spent), "limit": limit, "within_budget": spent <= limit,
                    "records_per_s": round(args.records / seconds, 1),
                }  # fmt: skip
                rows.append(row)
                print(
                    f"budget {share:.0%} concurrency {conc:>2}: {report.succeeded}/{paid} of the replay "
                    f"({row['of_replay']:.1%}), spent {spent}/{limit}, {row['records_per_s']} records/s"
                )
    print("saved", save("batch", rows))


if __name__ == "__main__":
    main()
