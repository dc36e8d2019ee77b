"""Gateway overhead: the fake provider called directly against the same fake through the gateway
(budgets on, SQLite ledger), in one run, interleaved, at 1, 50 and 200 concurrent clients,
streamed and not; then the gateway's memory after many requests.

    python bench/gateway.py [--requests 400] [--concurrency 1 50 200] [--memory-requests 100000]

Each client sends its requests one after the other; the figures are the median of the rounds.
"Highest sustained requests per second" is the throughput at the highest concurrency measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from common import TOKENWARD, free_port, process, save, summary

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
    "max_tokens": 100,
}


async def _one(client: httpx.AsyncClient, url: str, stream: bool, headers: dict[str, str]) -> float:
    body = {**BODY, "stream": stream}
    start = time.perf_counter()
    if stream:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            async for _ in response.aiter_bytes():
                pass
    else:
        (await client.post(url, json=body, headers=headers)).raise_for_status()
    return time.perf_counter() - start


async def _load(
    url: str, headers: dict[str, str], requests: int, concurrency: int, stream: bool
) -> dict[str, float]:
    latencies: list[float] = []
    per_client = max(1, requests // concurrency)
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        failed = 0

        async def worker() -> None:
            nonlocal failed
            for _ in range(per_client):
                try:
                    latencies.append(await _one(client, url, stream, headers))
                except httpx.HTTPError:  # counted and reported, not a crash of the whole run
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {**summary(latencies, time.perf_counter() - start), "failed": failed}


def load(
    url: str, headers: dict[str, str], requests: int, concurrency: int, stream: bool
) -> dict[str, float]:
    return asyncio.run(_load(url, headers, requests, concurrency, stream))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-requests", type=int, default=100_000)
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
    memory: dict[str, float] = {}
    with (
        process(fake_args, f"http://127.0.0.1:{fake_port}/healthz", work / "fake.log"),
        process(gw_args, f"http://127.0.0.1:{gw_port}/healthz", work / "gateway.log") as gateway,
    ):
        targets = {
            "direct": (f"http://127.0.0.1:{fake_port}/v1/chat/completions", {}),
            "gateway": (
                f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                {"authorization": "Bearer tw-bench", "x-tokenward-session": "bench"},
            ),
        }
        for url, headers in targets.values():  # warm up both
            load(url, headers, 100, 10, False)
        for stream in (False, True):
            for concurrency in args.concurrency:
                key = f"{'stream' if stream else 'json'} c={concurrency}"
                results[key] = {"direct": [], "gateway": []}
                requests = max(args.requests, concurrency * 2)
                for _ in range(args.rounds):  # interleaved, so both see the same machine
                    for name, (url, headers) in targets.items():
                        results[key][name].append(load(url, headers, requests, concurrency, stream))
        if args.memory_requests:
            url, headers = targets["gateway"]
            memory["rss_before_mb"] = rss_mb(gateway.pid)
            start = time.perf_counter()
            memory["failed"] = load(url, headers, args.memory_requests, 50, False)["failed"]
            memory["seconds"] = time.perf_counter() - start
            memory["rss_after_mb"] = rss_mb(gateway.pid)
            memory["requests"] = args.memory_requests

    print(
        f"{'mode':<14}{'direct p50':>12}{'gw p50':>10}{'added p50':>11}{'direct p99':>12}{'gw p99':>10}"
        f"{'direct rps':>12}{'gw rps':>10}{'rps ratio':>11}"
    )
    table: dict[str, object] = {}
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
    if memory:
        table["memory"] = memory
        print(
            f"gateway RSS {memory['rss_before_mb']:.0f} MB before and {memory['rss_after_mb']:.0f} MB after "
            f"{memory['requests']:,} more requests ({memory['requests'] / memory['seconds']:.0f} req/s at 50 clients)"
        )
    failures = {k: {n: sum(r["failed"] for r in rs) for n, rs in runs.items()} for k, runs in results.items()}
    print(f"failed requests (transport errors), by mode and target: {failures}")
    print(f"(median of {args.rounds} interleaved rounds; results in {save('gateway', table)})")


if __name__ == "__main__":
    main()
