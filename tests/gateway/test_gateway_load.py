"""Promise 1 at 200 concurrent streaming clients on one budget: an observer on its own SQLite
connection sees spent + held within the limit all along, and the final spend is the sum of the
settled usage (every stream's real usage stays within its hold: the fake honours the bound and
its prompt count stays under our estimate)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from decimal import Decimal

import httpx
import pytest

from tests.support.fixtures import KEY
from tokenward.core.budgets import Subject

pytestmark = pytest.mark.slow
LIMIT = 20000


def test_200_concurrent_streams_never_overspend(start_gateway) -> None:
    budget = {"name": "crowd", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
    gateway = start_gateway(budgets=[budget], defaults={"max_output_tokens": 120, "min_output_tokens": 8})
    path = gateway.ledger_url.removeprefix("sqlite:///")
    stop, worst = threading.Event(), []

    def observe() -> None:
        conn = sqlite3.connect(path)
        while not stop.is_set():
            for spent, held in conn.execute("SELECT spent, held FROM balances WHERE budget = 'crowd'"):
                worst.append(Decimal(spent) + Decimal(held))
        conn.close()

    async def client(http: httpx.AsyncClient, seed: int) -> list[int]:
        rng, statuses = random.Random(seed), []
        for _ in range(3):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Say hello"}],
                "stream": True,
                "fake": {"reply_tokens": rng.randint(5, 150), "chunk_tokens": 5},
            }
            async with http.stream(
                "POST",
                f"{gateway.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {KEY}", "x-tokenward-session": "crowd"},
            ) as response:
                statuses.append(response.status_code)
                await response.aread()
        return statuses

    async def main() -> list[int]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            results = await asyncio.gather(*(client(http, i) for i in range(200)))
        return [s for statuses in results for s in statuses]

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        statuses = asyncio.run(main())
    finally:
        stop.set()
        watcher.join()
    assert set(statuses) <= {200, 402} and 402 in statuses and 200 in statuses
    assert worst and max(worst) <= LIMIT
    events = gateway.observer().events(subject=Subject(session="demo/crowd"))
    (balance,) = gateway.observer().balances(Subject(session="demo/crowd"))
    assert balance.held == 0
    assert balance.spent == sum(e.charged["total_tokens"] for e in events) <= LIMIT
    assert len(events) == statuses.count(200)
