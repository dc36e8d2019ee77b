"""Ledger backends side by side, and one gateway replica against two, in one run.

    python bench/backends.py [--ops 1000] [--threads 8] [--requests 2000] [--concurrency 64]

1. **Reserve + settle per backend** (``memory://``, ``sqlite://``, ``redis://`` with its events in
   PostgreSQL, ``postgresql://``): one thread doing ``--ops`` reserve-then-settle pairs (latency
   p50/p99 of a pair), then ``--threads`` threads doing as many each (pairs per second). Every pair
   charges three budgets at once (a per-user template, a fixed team budget, a per-session
   template), limits high enough never to deny. For Redis, also how long its durable store took to
   have every event after the run (the drain lag).
2. **One replica against two**: ``tokenward serve`` processes on one ``redis://`` ledger in front
   of the in-process fake provider, ``--requests`` chat completions from ``--concurrency``
   clients spread over the replicas: requests per second and p50/p99, and the ratio.

The servers are the ones of ``TOKENWARD_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``) and
``TOKENWARD_BENCH_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``), each run in a
key prefix / schema of its own, removed afterwards; a backend whose server is unreachable is
reported as skipped. These machines are shared and noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from common import TOKENWARD, free_port, process, save, summary

from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import Ledger, open_ledger

REDIS = os.environ.get("TOKENWARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES = os.environ.get("TOKENWARD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
HOLD = {"total_tokens": Decimal(1500), "cost_usd": Decimal("0.0105"), "requests": Decimal(1)}
CHARGED = {"total_tokens": Decimal(1200), "cost_usd": Decimal("0.006"), "requests": Decimal(1)}
BUDGETS = (
    Budget("each-user", "user", "total_tokens", Decimal(10**15)),
    Budget("team-red", "team", "cost_usd", Decimal(10**12), subject_id="red"),
    Budget("each-session", "session", "requests", Decimal(10**12)),
)


def _urls(tmp: Path) -> dict[str, str]:
    tag = f"bench{uuid.uuid4().hex[:10]}"
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp / 'bench.db'}",
        "redis": f"{REDIS}?prefix={tag}&spool={tmp / 'spool.db'}&events={POSTGRES}?schema={tag}_events",
        "postgresql": f"{POSTGRES}?schema={tag}&spool={tmp / 'pg-spool.db'}",
    }


def _pairs(ledger: Ledger, thread: int, ops: int) -> list[float]:
    subject = Subject(team="red", user=f"u{thread % 4}", session=f"s{thread}")
    out = []
    for op in range(ops):
        rid = f"b{thread}-{op}-{uuid.uuid4().hex[:6]}"
        start = time.perf_counter()
        reservation = ledger.reserve(subject, HOLD, idempotency_key=rid)
        ledger.settle(
            reservation.id,
            UsageEvent(
                rid, ledger.clock.now(), subject, Usage(input_tokens=1000, output_tokens=200), charged=CHARGED
            ),
        )
        out.append(time.perf_counter() - start)
    return out


def backend(name: str, url: str, ops: int, threads: int) -> dict[str, Any]:
    """Latency with one thread, throughput with ``threads``, for one backend."""
    try:
        ledger = open_ledger(url)
    except Exception as exc:  # a server that is not there
        return {"backend": name, "skipped": f"{type(exc).__name__}: {exc}"}
    try:
        for budget in BUDGETS:
            ledger.put_budget(budget)
        _pairs(ledger, 99, min(100, ops))  # warm-up: connections, caches, scripts
        latencies = _pairs(ledger, 0, ops)
        row = {"backend": name, **{f"one_{k}": v for k, v in summary(latencies, sum(latencies)).items()}}
        results: list[list[float]] = [[] for _ in range(threads)]
        workers = [
            threading.Thread(target=lambda i=i: results[i].extend(_pairs(ledger, 100 + i, ops)))
            for i in range(threads)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
        many = summary([x for r in results for x in r], wall)
        row.update({f"many_{k}": v for k, v in many.items()}, threads=threads)
        flush = getattr(ledger, "flush", None)
        if name == "redis" and flush is not None:
            start = time.perf_counter()
            left = flush(120)
            row["drain_lag_s"] = time.perf_counter() - start
            row["left_in_spool"] = left
        return row
    finally:
        ledger.close()
        _drop(name, url)


def _drop(name: str, url: str) -> None:
    """Remove what the run made on the shared servers."""
    try:
        if name in ("redis", "postgresql"):
            import psycopg

            schema = url.split("schema=")[-1].split("&")[0]
            with psycopg.connect(POSTGRES, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if name == "redis":
            import redis

            client = redis.Redis.from_url(REDIS)
            prefix = url.split("prefix=")[1].split("&")[0]
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    except Exception as exc:  # pragma: no cover - best effort
        print(f"  (could not clean up {name}: {exc})")


async def _load(urls: list[str], requests: int, concurrency: int) -> tuple[list[float], float, int]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
    latencies: list[float] = []
    failed = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal failed
            for n in counter:
                start = time.perf_counter()
                response = await client.post(
                    f"{urls[n % len(urls)]}/v1/chat/completions",
                    json=body,
                    headers={"authorization": "Bearer tw-bench", "x-tokenward-session": f"s{n % 50}"},
                )
                latencies.append(time.perf_counter() - start)
                failed += response.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start, failed


def replicas(tmp: Path, count: int, requests: int, concurrency: int) -> dict[str, Any]:
    """``count`` gateway processes on one Redis ledger, under one load."""
    tag = f"benchgw{uuid.uuid4().hex[:8]}"
    configs = []
    for index in range(count):
        url = f"{REDIS}?prefix={tag}&spool={tmp / f'{tag}-{index}.db'}&events={POSTGRES}?schema={tag}"
        config = tmp / f"{tag}-{index}.yaml"
        config.write_text(
            json.dumps(
                {
                    "ledger": url,
                    "upstreams": [{"name": "fake", "provider": "fake", "models": ["*"]}],
                    "keys": [{"key": "tw-bench", "name": "bench", "user": "u", "project": "bench"}],
                    "budgets": [{"name": "bench-project", "scope": "project", "id": "bench", "meter": "total_tokens",
                                 "limit": 10**12}, {"name": "each-session", "scope": "session", "meter": "requests",
                                 "limit": 10**9}],
                    "observe": {"prometheus": False},
                }
            )
        )  # fmt: skip
        configs.append(config)
    ports = [free_port() for _ in configs]
    try:
        with _serving(configs, ports, tmp):
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            asyncio.run(_load(urls, min(200, requests), concurrency))  # warm-up
            latencies, wall, failed = asyncio.run(_load(urls, requests, concurrency))
    finally:
        _drop("redis", f"{REDIS}?prefix={tag}&schema={tag}")
    return {"replicas": count, "failed": failed, **summary(latencies, wall)}


class _serving:
    """Several ``tokenward serve`` processes at once."""

    def __init__(self, configs: list[Path], ports: list[int], tmp: Path) -> None:
        self.contexts = [
            process([*TOKENWARD, "serve", "--config", str(c), "--port", str(p), "--log-level", "warning"],
                    f"http://127.0.0.1:{p}/healthz", tmp / f"serve-{p}.log")
            for c, p in zip(configs, ports, strict=True)
        ]  # fmt: skip

    def __enter__(self) -> None:
        for context in self.contexts:
            context.__enter__()

    def __exit__(self, *exc: object) -> None:
        for context in reversed(self.contexts):
            context.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=1000, help="reserve+settle pairs per thread")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="gateway requests per replica setup")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as folder:
        tmp = Path(folder)
        rows = [backend(name, url, args.ops, args.threads) for name, url in _urls(tmp).items()]
        print(
            f"reserve + settle, 3 budgets each: 1 thread x {args.ops} pairs; {args.threads} threads x {args.ops}"
        )
        print(
            f"{'backend':11} {'p50 ms':>8} {'p99 ms':>8} {'1-thread/s':>11} {f'{args.threads}-thread/s':>11}"
        )
        for row in rows:
            if "skipped" in row:
                print(f"{row['backend']:11} skipped: {row['skipped']}")
                continue
            print(
                f"{row['backend']:11} {row['one_p50_ms']:8.3f} {row['one_p99_ms']:8.3f} "
                f"{row['one_rps']:11.0f} {row['many_rps']:11.0f}"
                + (
                    f"   (durable store caught up {row['drain_lag_s']:.2f} s after the run)"
                    if "drain_lag_s" in row
                    else ""
                )
            )
        gateway: list[dict[str, Any]] = []
        try:
            gateway = [replicas(tmp, n, args.requests, args.concurrency) for n in (1, 2)]
        except Exception as exc:
            print(f"replicas skipped: {type(exc).__name__}: {exc}")
        if gateway:
            print(f"gateway on redis://, {args.requests} requests from {args.concurrency} clients")
            for row in gateway:
                print(f"  {row['replicas']} replica(s): {row['rps']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, "
                      f"p99 {row['p99_ms']:.1f} ms, failed {row['failed']}")  # fmt: skip
            print(f"  2 replicas / 1 replica throughput: {gateway[1]['rps'] / gateway[0]['rps']:.2f}x "
                  f"(on {os.cpu_count()} CPUs, the load generator included)")  # fmt: skip
    path = save(
        "backends", {"args": vars(args), "cpus": os.cpu_count(), "backends": rows, "replicas": gateway}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
