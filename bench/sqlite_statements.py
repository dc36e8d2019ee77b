"""SQLite statements and write transactions per gateway call (issue 17: at most 2 write
transactions per call, reserve with its forwarded mark, and settle).

    python bench/sqlite_statements.py [--calls 50] [--stream]

The gateway runs in this process with bench/gateway.yaml's four budgets, on a fresh SQLite file,
in front of the in-process fake provider; every statement of every ledger connection is traced
(``sqlite3.Connection.set_trace_callback``) while ``--calls`` calls are made one after another,
after a warm-up call. Reads outside a transaction (autocommit) are counted apart.
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.servers import ThreadedServer  # noqa: E402

from tokenward.gateway import GatewayConfig, create_app  # noqa: E402

statements: list[str] = []
lock = threading.Lock()
_connect = sqlite3.connect


def _traced(*args, **kwargs):  # type: ignore[no-untyped-def]
    conn = _connect(*args, **kwargs)

    def trace(sql: str) -> None:
        with lock:
            statements.append(sql.strip().split("\n")[0][:90])

    conn.set_trace_callback(trace)
    return conn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    sqlite3.connect = _traced  # type: ignore[assignment]
    work = Path(tempfile.mkdtemp(prefix="tw-sqlite-count-"))
    data = yaml.safe_load((HERE / "gateway.yaml").read_text().replace("${MOCK_URL}", "http://unused"))
    data["ledger"] = f"sqlite:///{work / 'ledger.db'}"
    data["upstreams"] = [{"name": "fake", "provider": "fake"}]  # in-process fake provider
    server = ThreadedServer(create_app(GatewayConfig.from_mapping(data)))
    server.start()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
    if args.stream:
        body["stream"] = True
    headers = {"authorization": "Bearer tw-bench", "x-tokenward-session": "count"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            client.post("/v1/chat/completions", json=body).raise_for_status()  # warm-up
            with lock:
                statements.clear()
            for _ in range(args.calls):
                client.post("/v1/chat/completions", json=body).raise_for_status()
            with lock:
                seen = list(statements)
    finally:
        server.stop()
    writes = sum(1 for s in seen if s.upper().startswith("BEGIN IMMEDIATE"))
    reads = sum(1 for s in seen if s.upper() == "BEGIN")
    kinds = collections.Counter(s.split(" ")[0].upper() for s in seen)
    print(f"{'streamed' if args.stream else 'non-streamed'} calls: {args.calls}")
    print(f"statements per call: {len(seen) / args.calls:.1f}  ({dict(kinds)})")
    print(
        f"write transactions per call: {writes / args.calls:.2f}; read transactions per call: {reads / args.calls:.2f}"
    )
    top = collections.Counter(seen).most_common(25)
    for sql, n in top:
        print(f"{n / args.calls:6.2f}  {sql}")
    size = (work / "ledger.db").stat().st_size + sum(p.stat().st_size for p in work.glob("ledger.db-*"))
    print(f"ledger file(s): {size / 1024:.0f} KiB after {args.calls + 1} calls")


if __name__ == "__main__":
    main()
