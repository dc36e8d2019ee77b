"""A call is settled after its answer is sent, not before (issue 17: settle work off the response
path, through a bounded queue, with its lag reported).

The answer's budget headers are computed from the priced event; the ledger write that makes the
event durable runs once the last byte is out. Meanwhile the call's hold counts, so a budget never
sees less than the call cost. The test holds SQLite's write lock from a second connection while
the call is answered: before this change the answer waited for the lock (the settle was on the
response path); now it arrives at once and the event follows when the lock is let go.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from decimal import Decimal

import httpx
import pytest

from tests.support.fixtures import KEY, wait_settled
from tokenward.core.budgets import Subject
from tokenward.errors import StoreUnavailable
from tokenward.gateway.settling import Settlements

HEADERS = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "lag"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50}
BUDGET = {"name": "s", "scope": "session", "meter": "total_tokens", "limit": 100_000}


def _hold_write_lock(path: str, taken: threading.Event, release: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # the ledger's writes wait for this (busy timeout)
    taken.set()
    release.wait(10)
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_answer_does_not_wait_for_its_settle_and_the_hold_counts_meanwhile(start_gateway, stream) -> None:
    gateway = start_gateway(budgets=[BUDGET])
    path = gateway.ledger_url.removeprefix("sqlite:///")
    taken, release = threading.Event(), threading.Event()
    fake = {"x-fake-options": json.dumps({"latency_ms": 300})}
    with httpx.Client(base_url=gateway.url, headers={**HEADERS, **fake}, timeout=30) as client:
        # the call is admitted, then the lock is taken while the upstream is still answering
        locker = threading.Thread(target=_hold_write_lock, args=(path, taken, release))
        threading.Timer(0.1, locker.start).start()
        started = time.monotonic()
        if stream:
            with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
                body = b"".join(response.iter_bytes())
            assert body.rstrip().endswith(b"data: [DONE]")
        else:
            response = client.post("/v1/chat/completions", json=BODY)
            usage = response.json()["usage"]
            # the headers are the settled charge's, though the settle is not durable yet
            assert int(response.headers["x-ratelimit-remaining"]) == 100_000 - usage["total_tokens"]
        answered = time.monotonic() - started
    assert response.status_code == 200 and taken.is_set()
    assert answered < 3, f"the answer waited {answered:.1f} s for the ledger's write lock"
    observer_conn = sqlite3.connect(path)  # WAL: a reader is not blocked by the held write lock
    events = observer_conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]
    held = observer_conn.execute("SELECT sum(held) FROM balances WHERE budget = 's'").fetchone()[0]
    observer_conn.close()
    assert events == 0 and Decimal(str(held)) > 0  # not settled yet: the hold still counts
    assert gateway.state.settlements.pending == 1
    time.sleep(0.2)  # the settle waits for the lock this long after the answer
    release.set()
    locker.join(10)
    wait_settled(gateway.state)
    (event,) = gateway.observer().events()
    (balance,) = gateway.observer().balances(Subject(session="demo/lag"))
    assert balance.held == 0 and balance.spent == event.charged["total_tokens"] > 0
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("tokenward_settle_lag_seconds_bucket")
    }
    assert buckets["0.1"] == 0 and buckets["+Inf"] == 1  # it waited 200 ms for the lock after the answer


def test_settle_lag_is_reported_in_metrics(start_gateway) -> None:
    gateway = start_gateway(budgets=[BUDGET])
    with httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=30) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=BODY).status_code == 200
        wait_settled(gateway.state)
        metrics = client.get("/metrics").text
    (count,) = [
        line for line in metrics.splitlines() if line.startswith("tokenward_settle_lag_seconds_count")
    ]
    assert float(count.split()[-1]) == 3


def test_admissions_wait_while_the_queue_of_answered_calls_is_full() -> None:
    async def main() -> list[str]:
        settlements, order = Settlements(limit=2), []
        settlements.waiting()
        settlements.waiting()

        async def admit() -> None:
            await settlements.room()
            order.append("admitted")

        task = asyncio.create_task(admit())
        await asyncio.sleep(0.05)
        order.append("still waiting" if not task.done() else "admitted too early")
        settlements.settled(time.monotonic())
        await asyncio.wait_for(task, 1)
        return order

    assert asyncio.run(main()) == ["still waiting", "admitted"]


def test_an_admission_that_waits_too_long_for_the_queue_is_refused_as_a_ledger_outage() -> None:
    """A ledger that stops settling must not leave new calls hanging: past ``wait`` the
    admission fails as the ledger being unavailable (the gateway's 503 ``ledger_unavailable``)."""

    async def main() -> float:
        settlements = Settlements(limit=1, wait=0.2)
        settlements.waiting()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="1 answered calls are waiting to settle"):
            await settlements.room()
        waited = time.monotonic() - began
        settlements.settled(time.monotonic())
        await asyncio.wait_for(settlements.room(), 1)  # room again once the settle is done
        return waited

    assert 0.2 <= asyncio.run(main()) < 5


def test_a_gateway_whose_answered_calls_cannot_settle_refuses_new_calls_with_503(start_gateway) -> None:
    """End to end: with the queue of calls waiting to settle full and not draining, a new call
    is answered 503 ``ledger_unavailable`` once the wait is over, and is not made."""
    gateway = start_gateway(budgets=[BUDGET])
    gateway.state.settlements = Settlements(limit=1, wait=0.3)
    gateway.state.settlements.waiting()  # one answered call that never settles
    with httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=30) as client:
        answer = client.post("/v1/chat/completions", json=BODY)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "ledger_unavailable"
    assert gateway.observer().events() == []
