"""Two ``tokenward serve`` replicas on one shared ledger, 500 concurrent requests on one budget.

Every request charges the project budget ``scale-tokens`` (6,000 tokens; a call holds its prompt
estimate, 8 tokens, plus its output bound, 20, and the fake provider charges 6 + 20 = 26), so
about 230 of the 500 fit: the budget is exhausted while calls are in flight on both replicas. An
observer in the test reads the budget's balance over and over from its own ledger connection
and checks spent + held <= limit at every sample; afterwards every answered call has exactly one
usage event, the spend is the sum of the events, and nothing is held.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.ledger.backends import (
    BACKENDS,
    drop_postgres_schema,
    drop_redis_prefix,
    fresh_postgres_url,
    fresh_redis_url,
    require_available,
)
from tests.scale.services import gateway_config, replicas
from tokenward.core.budgets import Subject
from tokenward.ledger import Ledger, open_ledger
from tokenward.ledger.spool import Spool

pytestmark = pytest.mark.slow

LIMIT = Decimal(6000)
SUBJECT = Subject(project="scale")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
KEY = {"key": "tw-scale", "name": "scale-key", "user": "u1", "project": "scale"}
BUDGET = {
    "name": "scale-tokens",
    "scope": "project",
    "id": "scale",
    "meter": "total_tokens",
    "limit": str(LIMIT),
}


async def _burst(urls: list[str], count: int) -> list[tuple[int, str, str]]:
    """``count`` requests at once, alternating replicas; (status, request id, replica) each."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(index: int) -> tuple[int, str, str]:
            url = urls[index % len(urls)]
            headers = {"authorization": "Bearer tw-scale", "x-request-id": f"scale-{index}"}
            response = await client.post(f"{url}/v1/chat/completions", json=BODY, headers=headers)
            return response.status_code, response.headers.get("x-tokenward-request-id", ""), url

        return await asyncio.gather(*(one(i) for i in range(count)))


class Observer(threading.Thread):
    """Reads the budget's balance from its own ledger until stopped; keeps the worst excess."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.ledger = ledger
        self.samples = 0
        self.worst = Decimal("-Infinity")
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                for balance in self.ledger.balances(SUBJECT):
                    if balance.budget.name == "scale-tokens":
                        self.worst = max(self.worst, balance.spent + balance.held - balance.budget.limit)
                self.samples += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.mark.parametrize(
    "backend",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def test_two_replicas_500_concurrent_requests_one_budget(backend: str, tmp_path: Path) -> None:
    require_available(BACKENDS[backend])
    if backend == "redis":
        # each replica spools on its own disk, as on separate machines; events go to PostgreSQL
        require_available(BACKENDS["postgres"])
        base = fresh_redis_url(tmp_path, events="postgres")
        urls = [base.replace("-spool.db&", f"-spool-{i}.db&") for i in range(2)]
        reader_url = base.replace("-spool.db&", "-spool-reader.db&")
    else:
        base = fresh_postgres_url(tmp_path)
        urls = [base.replace("pg-spool.db", f"pg-spool-{i}.db") for i in range(2)]
        reader_url = base
    configs = [
        gateway_config(tmp_path / f"gw{i}.yaml", url, budgets=[BUDGET], keys=[KEY])
        for i, url in enumerate(urls)
    ]
    reader = open_ledger(reader_url)
    try:
        with replicas(configs, tmp_path) as running:
            observer = Observer(reader)
            observer.start()
            results = asyncio.run(_burst([r.url for r in running], 500))
            observer.done.set()
            observer.join(30)
            for replica in running:  # SIGTERM: settle what is open, flush the spool
                assert replica.stop() in (0, -15)
        assert observer.error is None, observer.error
        statuses = Counter(status for status, _, _ in results)
        assert set(statuses) <= {200, 402, 429}, statuses
        answered = {rid for status, rid, _ in results if status == 200}
        assert statuses[200] > 100 and statuses[402] + statuses[429] > 100, statuses
        assert {url for status, _, url in results if status == 200} == {r.url for r in running}

        assert observer.samples > 5
        assert observer.worst <= 0, f"overspent by {observer.worst} at some sample"
        for index in range(2):  # nothing left behind in either replica's spool
            spool = tmp_path / (
                f"{base.split('prefix=')[1].split('&')[0]}-spool-{index}.db"
                if backend == "redis"
                else f"pg-spool-{index}.db"
            )
            if spool.exists():
                assert Spool(spool).pending() == 0

        events = reader.events(subject=SUBJECT)
        ids = Counter(e.request_id for e in events)
        assert ids and max(ids.values()) == 1  # exactly once
        assert set(ids) == answered  # every answered call, and nothing else
        charged = sum((e.charged["total_tokens"] for e in events), Decimal(0))
        (balance,) = [b for b in reader.balances(SUBJECT) if b.budget.name == "scale-tokens"]
        assert (balance.spent, balance.held) == (charged, 0)
        assert balance.spent <= LIMIT
        if backend == "redis":  # the durable store charged the same events
            (durable,) = [b for b in reader.store.balances(SUBJECT) if b.budget.name == "scale-tokens"]
            assert durable.spent == charged
    finally:
        reader.close()
        if backend == "redis":
            drop_redis_prefix(base)
        else:
            drop_postgres_schema(base)
