"""How much the SQLite ledger file grows per gateway call, and what it grows by (issue 17 item e).

    python bench/ledger_growth.py [--calls 2000] [--stream]

The gateway runs in this process with bench/gateway.yaml's four budgets, on a fresh SQLite file,
in front of the in-process fake provider. After 100 warm-up calls (balance rows, rollups, template
instances made) the file is checkpointed and measured, ``--calls`` more calls are made one after
another, and it is measured again: the file's growth per call, and the growth of the pages of the
usage events and of the reservations (each table with its indexes, from SQLite's ``dbstat``).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.servers import ThreadedServer  # noqa: E402

from tokenward.gateway import GatewayConfig, create_app  # noqa: E402

WARM_UP = 100


def measure(path: Path) -> dict[str, int]:
    """File bytes after a full checkpoint, bytes of pages by table (indexes included), rows."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out = {"file": path.stat().st_size}
        for table in ("usage_events", "reservations"):
            out[table] = conn.execute(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = ?)",
                (table,),
            ).fetchone()[0]
        out["reservation_rows"] = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
        out["freelist"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tw-sqlite-growth-"))
    path = work / "ledger.db"
    data = yaml.safe_load((HERE / "gateway.yaml").read_text().replace("${MOCK_URL}", "http://unused"))
    data["ledger"] = f"sqlite:///{path}"
    data["upstreams"] = [{"name": "fake", "provider": "fake"}]  # in-process fake provider
    server = ThreadedServer(create_app(GatewayConfig.from_mapping(data)))
    server.start()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
    if args.stream:
        body["stream"] = True
    headers = {"authorization": "Bearer tw-bench", "x-tokenward-session": "growth"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for _ in range(WARM_UP):
                client.post("/v1/chat/completions", json=body).raise_for_status()
            before = measure(path)
            for _ in range(args.calls):
                client.post("/v1/chat/completions", json=body).raise_for_status()
            after = measure(path)
    finally:
        server.stop()
    n = args.calls
    print(f"{'streamed' if args.stream else 'non-streamed'} calls: {n} (after {WARM_UP} warm-up calls)")
    print(
        f"file: {(after['file'] - before['file']) / n:.0f} bytes per call ({after['file'] / 1024:.0f} KiB in all)"
    )
    for table in ("usage_events", "reservations"):
        print(f"  {table} (with its indexes): {(after[table] - before[table]) / n:.0f} bytes per call")
    print(f"rows in reservations: {before['reservation_rows']} -> {after['reservation_rows']}")
    print(f"free pages: {before['freelist']} -> {after['freelist']}")


if __name__ == "__main__":
    main()
