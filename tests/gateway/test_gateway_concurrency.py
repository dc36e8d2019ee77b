"""Promise 1 under load: 50 concurrent clients on one budget never overspend it.

An observer on its own connection to the SQLite file reads the balance all along and checks that
spent plus held never exceeds the limit. Replies have varied real lengths within their bounds (the
fake honours the bound; its prompt count stays below our estimate), so no call costs more than it
held and the invariant must hold at every instant.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from decimal import Decimal

import openai
import pytest

from tests.support.fixtures import KEY
from tokenward.core.budgets import Subject

LIMIT = 3000
CLIENTS = 50


@pytest.mark.slow
def test_fifty_clients_on_one_budget_never_overspend(start_gateway) -> None:
    budget = {"name": "shared", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
    gateway = start_gateway(budgets=[budget], defaults={"max_output_tokens": 80, "min_output_tokens": 4})
    path = gateway.ledger_url.removeprefix("sqlite:///")
    stop = threading.Event()
    worst: list[Decimal] = []

    def observe() -> None:
        conn = sqlite3.connect(path)
        while not stop.is_set():
            rows = conn.execute("SELECT spent, held FROM balances WHERE budget = 'shared'").fetchall()
            worst.extend(Decimal(spent) + Decimal(held) for spent, held in rows)
        conn.close()

    denials: list[int] = []
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        api = openai.OpenAI(
            api_key=KEY,
            base_url=f"{gateway.url}/v1",
            max_retries=0,
            default_headers={"x-tokenward-session": "crowd"},
        )
        try:
            for _ in range(6):
                stream = rng.random() < 0.5
                result = api.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Say hello"}],
                    stream=stream,
                    extra_body={"fake": {"reply_tokens": rng.randint(5, 120)}},
                )
                if stream:
                    list(result)
        except openai.APIStatusError as exc:
            denials.append(exc.status_code)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    watcher = threading.Thread(target=observe)
    watcher.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()

    assert not errors, errors[:3]
    assert denials and set(denials) == {402}, "the budget must run out and deny with 402"
    assert worst and max(worst) <= LIMIT
    events = gateway.observer().events(subject=Subject(session="demo/crowd"))
    settled = sum(Decimal(e.usage.input_tokens + e.usage.output_tokens) for e in events)
    (balance,) = gateway.observer().balances(Subject(session="demo/crowd"))
    assert balance.held == 0
    assert balance.spent == settled <= LIMIT
    assert all(e.overage == {} for e in events)
