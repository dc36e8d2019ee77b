"""The dashboard over a big ledger: server time per page and the time from a settle to the page.

1. Bulk-loads a SQLite ledger with ``--events`` usage events (default 1,000,000: 1,000 users in 5
   projects, 50 models, 20 tags, spread over the last 30 days), written through the ledger's own
   event writer (so its daily rollups are kept as the gateway would keep them), in large
   transactions; the file is kept (``--ledger``) and reused by the next run when it has the events.
2. Server time per page: the p50 (and p90) of 20 warm requests to each page of the standalone
   dashboard app, signed in, called in-process (``httpx.ASGITransport``: no network in the time).
   The issue's target: overview p50 <= 300 ms on SQLite.
3. Settle to page: another connection settles a call (as another process would); a poller asks
   for the overview's live fragment every second, as the page's htmx does, from a random phase;
   the time until the call's session shows is measured (target <= 2 s), over ``--trials`` calls.

    python bench/dashboard.py [--events 1000000] [--ledger /tmp/tokenward-dashboard-bench.db]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from common import save

from tokenward.core.budgets import Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.gateway.ui import standalone_app
from tokenward.ledger import open_async_ledger, open_ledger

USERS, MODELS, TAGS, PROJECTS, DAYS = 1000, 50, 20, 5, 30


def _event(i: int, now: datetime, rng: random.Random) -> UsageEvent:
    user = rng.randrange(USERS)
    project = f"p{user % PROJECTS}"
    at = now - timedelta(seconds=rng.random() * DAYS * 86400)
    tokens_in, tokens_out = rng.randrange(100, 20000), rng.randrange(10, 2000)
    cost = (Decimal(tokens_in) * Decimal("0.00000015") + Decimal(tokens_out) * Decimal("0.0000006")).quantize(
        Decimal("0.000000001")
    )
    return UsageEvent(
        request_id=f"bench-{i}",
        at=at,
        subject=Subject(
            project=project,
            user=f"u{user}",
            session=f"u{user}-d{at.date().isoformat()}",
            tags=(("tag", f"t{rng.randrange(TAGS)}"),),
        ).namespaced(),
        usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model=f"model-{rng.randrange(MODELS)}",
        provider="fake",
        endpoint="openai-chat",
        cost_usd=cost,
        charged={"total_tokens": Decimal(tokens_in + tokens_out), "cost_usd": cost},
    )


def load(url: str, count: int, now: datetime) -> float:
    """Write ``count`` events (unless the ledger has them); returns the seconds it took."""
    ledger = open_ledger(url)
    try:
        have = ledger._execute("SELECT COUNT(*) FROM usage_events").fetchone()[0]  # type: ignore[attr-defined]
        if have >= count:
            print(f"ledger has {have:,} events already")
            return 0.0
        rng = random.Random(18)
        started = time.perf_counter()
        batch = 20000
        for first in range(have, count, batch):
            events = [_event(i, now, rng) for i in range(first, min(first + batch, count))]
            with ledger._transaction():  # type: ignore[attr-defined]
                for event in events:
                    ledger._insert_event(event)  # type: ignore[attr-defined]
            print(f"  {min(first + batch, count):,} events", end="\r", flush=True)
        for n in range(20):  # budgets to show: templates per user, fixed per project
            ledger.put_budget(
                Budget.from_dict(
                    {
                        "name": f"each-user-{n}",
                        "scope": "user",
                        "meter": "cost_usd",
                        "limit": 5 + n,
                        "window": "day",
                    }
                )
            )
        for p in range(PROJECTS):
            ledger.put_budget(
                Budget.from_dict(
                    {
                        "name": f"project-p{p}",
                        "scope": "project",
                        "id": f"p{p}",
                        "meter": "total_tokens",
                        "limit": 10**9,
                        "window": "month",
                    }
                )
            )
        print()
        return time.perf_counter() - started
    finally:
        ledger.close()


async def pages(url: str, warm: int = 20) -> dict[str, dict[str, float]]:
    ledger = open_async_ledger(url)
    app, token = standalone_app(ledger, who="bench")
    session = "p1/u1-d" + datetime.now(UTC).date().isoformat()
    paths = {
        "overview": "/ui",
        "overview live fragment": "/ui/live/overview",
        "budgets": "/ui/budgets",
        "sessions (last day)": "/ui/sessions",
        "session": f"/ui/session?id={session}",
        "events (one user)": "/ui/events?user=p1/u1&project=p1",
        "keys": "/ui/keys",
        "denials": "/ui/denials",
    }
    out: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            await client.get(f"/ui/signin?token={token}")
            for name, path in paths.items():
                first = await client.get(path)
                assert first.status_code == 200, (path, first.status_code, first.text[:300])
                times = []
                for _ in range(warm):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200
                times.sort()
                out[name] = {"p50_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9) - 1]}
                print(f"  {name:28} p50 {out[name]['p50_ms']:8.1f} ms   p90 {out[name]['p90_ms']:8.1f} ms")
    await ledger.close()
    return out


async def settle_to_page(url: str, trials: int) -> list[float]:
    ledger = open_async_ledger(url)
    app, token = standalone_app(ledger, who="bench")
    writer = open_ledger(url)  # another connection, as another process would settle
    seen: list[float] = []
    rng = random.Random(7)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
                await client.get(f"/ui/signin?token={token}")
                for n in range(trials):
                    sid = f"live-{n}-{time.time_ns()}"
                    found = asyncio.Event()

                    async def poll(sid: str = sid, found: asyncio.Event = found) -> None:
                        while True:  # what the page's htmx does: ask every second
                            response = await client.get("/ui/live/overview")
                            if sid in response.text:
                                found.set()
                                return
                            await asyncio.sleep(1.0)

                    poller = asyncio.create_task(poll())
                    await asyncio.sleep(1 + rng.random())  # the settle lands at a random phase
                    event = UsageEvent(
                        request_id=f"live-{sid}",
                        at=datetime.now(UTC),
                        subject=Subject(project="p0", user="live", session=sid).namespaced(),
                        usage=Usage(input_tokens=10, output_tokens=5),
                        model="model-0",
                        cost_usd=Decimal("0.00001"),
                    )
                    settled = time.perf_counter()
                    await asyncio.to_thread(writer.settle, None, event)
                    await asyncio.wait_for(found.wait(), timeout=60)
                    seen.append(time.perf_counter() - settled)
                    await poller
                    print(f"  call {n}: on the page after {seen[-1]:.2f} s")
    finally:
        writer.close()
        await ledger.close()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ledger", default="/tmp/tokenward-dashboard-bench.db")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    url = f"sqlite:///{Path(args.ledger).resolve()}"
    now = datetime.now(UTC)
    print(f"loading {args.events:,} events into {args.ledger}")
    seconds = load(url, args.events, now)
    print("server time per page (20 warm requests):")
    timings = asyncio.run(pages(url))
    print("settle to page:")
    seen = asyncio.run(settle_to_page(url, args.trials))
    result = {
        "events": args.events,
        "load_seconds": round(seconds, 1),
        "pages": timings,
        "overview_p50_ms": timings["overview"]["p50_ms"],
        "overview_target_ms": 300,
        "settle_to_page_s": {"max": max(seen), "mean": statistics.mean(seen)},
        "settle_to_page_target_s": 2,
    }
    path = save("dashboard", result)
    print(
        f"overview p50 {result['overview_p50_ms']:.0f} ms (target <= 300); settle to page max "
        f"{max(seen):.2f} s, mean {statistics.mean(seen):.2f} s (target <= 2); saved {path}"
    )


if __name__ == "__main__":
    main()
