"""Gateway overhead: the fake provider called directly against the same fake through the gateway
(budgets on, SQLite ledger), in one run, interleaved, with ratios.

    python bench/gateway.py [--requests 300] [--concurrency 1 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import TOKENWARD, free_port, process, save, summary

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
    "max_tokens": 100,
}


def _one(client: httpx.Client, url: str, stream: bool, headers: dict[str, str]) -> float:
    body = {**BODY, "stream": stream}
    start = time.perf_counter()
    if stream:
        with client.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            for _ in response.iter_bytes():
                pass
    else:
        client.post(url, json=body, headers=headers).raise_for_status()
    return time.perf_counter() - start


def load(
    url: str, headers: dict[str, str], requests: int, concurrency: int, stream: bool
) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = requests // concurrency

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            mine = [_one(client, url, stream, headers) for _ in range(per_worker)]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    fake_port, gw_port = free_port(), free_port()
    config = {
        "ledger": f"sqlite:///{work / 'ledger.db'}",
        "upstreams": [{"name": "fake", "provider": "fake", "base_url": f"http://127.0.0.1:{fake_port}"}],
        "keys": [{"key": "tw-bench", "name": "bench", "user": "bench"}],
        "budgets": [
            {"name": "session-tokens", "scope": "session", "meter": "total_tokens", "limit": 10**12},
            {
                "name": "user-usd",
                "scope": "user",
                "id": "bench",
                "meter": "cost_usd",
                "limit": 10**6,
                "window": "day",
            },
        ],
    }
    (work / "gateway.json").write_text(json.dumps(config))
    fake_args = [
        *TOKENWARD,
        "fake-provider",
        "--port",
        str(fake_port),
        "--reply-tokens",
        "50",
        "--chunk-tokens",
        "5",
    ]
    gw_args = [
        *TOKENWARD,
        "serve",
        "--config",
        str(work / "gateway.json"),
        "--port",
        str(gw_port),
        "--log-level",
        "warning",
    ]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with (
        process(fake_args, f"http://127.0.0.1:{fake_port}/healthz", work / "fake.log"),
        process(gw_args, f"http://127.0.0.1:{gw_port}/healthz", work / "gateway.log"),
    ):
        targets = {
            "direct": (f"http://127.0.0.1:{fake_port}/v1/chat/completions", {}),
            "gateway": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {"authorization": "Bearer tw-bench", "x-tokenward-session": "bench"},
            ),
        }
        for url, headers in targets.values():  # warm up both
            load(url, headers, 40, 4, False)
        for stream in (False, True):
            for concurrency in args.concurrency:
                key = f"{'stream' if stream else 'json'} c={concurrency}"
                results[key] = {"direct": [], "gateway": []}
                for _ in range(args.rounds):  # interleaved, so both see the same machine
                    for name, (url, headers) in targets.items():
                        results[key][name].append(load(url, headers, args.requests, concurrency, stream))

    print(
        f"{'mode':<14}{'direct p50':>12}{'gw p50':>10}{'added p50':>11}{'direct p99':>12}{'gw p99':>10}"
        f"{'direct rps':>12}{'gw rps':>10}{'rps ratio':>11}"
    )
    table = {}
    for key, runs in results.items():
        best = {name: {m: sorted(r[m] for r in rs)[len(rs) // 2] for m in rs[0]} for name, rs in runs.items()}
        d, g = best["direct"], best["gateway"]
        table[key] = {
            "direct": d,
            "gateway": g,
            "added_p50_ms": g["p50_ms"] - d["p50_ms"],
            "added_p99_ms": g["p99_ms"] - d["p99_ms"],
            "rps_ratio": g["rps"] / d["rps"],
        }
        print(
            f"{key:<14}{d['p50_ms']:>10.2f}ms{g['p50_ms']:>8.2f}ms{g['p50_ms'] - d['p50_ms']:>9.2f}ms"
            f"{d['p99_ms']:>10.2f}ms{g['p99_ms']:>8.2f}ms{d['rps']:>12.0f}{g['rps']:>10.0f}{g['rps'] / d['rps']:>11.2f}"
        )
    print(
        f"(median of {args.rounds} interleaved rounds of {args.requests} requests; results in {save('gateway', table)})"
    )


if __name__ == "__main__":
    main()
