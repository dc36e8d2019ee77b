"""Issue 15 item 6: a rolling window that is no longer than the retry horizon plus one bucket
answers a denial with 429 (which the official clients retry), never 402, and ``retry-after`` is
the first instant at which this call's hold fits as earlier spend stops counting, rounded up to
whole seconds.

The gateway's ledger runs on a manual clock, so every instant is exact. The fake provider answers
a ``Say hello`` prompt (6 tokens) with ``max_tokens`` words: a call with ``max_tokens: 20`` costs
6 + 20 = 26 tokens. ``rolling:1m`` has 60 buckets of 1 s, and spend admitted in bucket ``b``
counts until ``b + 61 s`` (the window plus one bucket: docs/budgets.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import KEY
from tests.support.servers import ThreadedServer
from tokenward.clock import ManualClock
from tokenward.gateway import GatewayConfig, create_app
from tokenward.ledger import open_async_ledger

T0 = datetime(2026, 3, 2, 12, 0, 0, 500000, tzinfo=UTC)  # half-way through a 1 s bucket
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def gateway(fake, tmp_path) -> Iterator[Callable[..., tuple[str, ManualClock]]]:
    servers: list[ThreadedServer] = []

    def start(window: str, limit: int = 100, **extra: Any) -> tuple[str, ManualClock]:
        clock = ManualClock(T0)
        config = GatewayConfig.from_mapping(
            {
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake.url,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": [{"key": KEY, "name": "k", "user": "alice"}],
                "budgets": [
                    {
                        "name": "per-minute",
                        "scope": "user",
                        "meter": "total_tokens",
                        "limit": limit,
                        "window": window,
                        "action": "deny",
                    }
                ],
                **extra,
            }
        )
        ledger = open_async_ledger(f"sqlite:///{tmp_path / f'ledger-{len(servers)}.db'}", clock=clock)
        server = ThreadedServer(create_app(config, ledger=ledger))
        server.start()
        servers.append(server)
        return server.url, clock

    yield start
    for server in servers:
        server.stop()


def call(url: str, max_tokens: int = 20) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": max_tokens},
        headers={"authorization": f"Bearer {KEY}"},
    )


def test_right_after_a_burst_a_per_minute_budget_answers_429_not_402(gateway) -> None:
    url, _ = gateway("rolling:1m")
    assert [call(url).status_code for _ in range(3)] == [200, 200, 200]  # 78 of 100, all at T0
    denied = call(url)  # 78 + 26 = 104 > 100
    # The burst's bucket began at 12:00:00 and stops counting at 12:01:01, 60.5 s from now: the
    # window resets in 61 s, past the 60 s horizon, which used to make this a 402.
    assert denied.status_code == 429, denied.text
    assert denied.headers["retry-after"] == "61"  # ceil(60.5)
    assert denied.json()["error"]["budget"]["retry_at"] == "2026-03-02T12:01:01Z"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):  # the class the official client retries
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    # The SDK in front of the gateway raises the same denial, with when to retry.
    guard = tokenward.Guard("memory://")
    wrapped = guard.wrap(openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0))
    with pytest.raises(tokenward.BudgetExceeded) as denial:
        wrapped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert denial.value.retry_at == datetime(2026, 3, 2, 12, 1, 1, tzinfo=UTC)
    guard.close()


def test_retry_after_is_when_this_calls_hold_fits_not_when_the_oldest_spend_goes(gateway) -> None:
    url, clock = gateway("rolling:1m")
    for offset in (0, 10, 20):  # 26 tokens in each of the buckets 12:00:00, :10 and :20
        clock.set(T0 + timedelta(seconds=offset))
        assert call(url).status_code == 200
    clock.set(T0 + timedelta(seconds=30))  # 12:00:30.5
    denied = call(url, max_tokens=44)  # holds 6 + 44 = 50: 78 + 50 - 100 = 28 must stop counting
    # 12:01:01 frees 26 (not enough), 12:01:11 frees 52: 40.5 s from now.
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "41", denied.text
    assert denied.headers["x-ratelimit-reset"] == "31"  # the oldest spend still goes first
    clock.set(T0 + timedelta(seconds=70))  # 12:01:10.5: only the first bucket has gone
    assert call(url, max_tokens=44).status_code == 429
    clock.set(T0 + timedelta(seconds=71))  # 12:01:11.5: the retry-after was right
    assert call(url, max_tokens=44).status_code == 200


def test_longer_rolling_windows_answer_429_only_when_the_hold_fits_within_the_horizon(gateway) -> None:
    url, clock = gateway("rolling:10m")  # 60 buckets of 10 s: counts up to 610 s
    assert [call(url).status_code for _ in range(3)] == [200, 200, 200]
    clock.set(T0 + timedelta(seconds=500))
    soon = call(url)  # fits at 12:10:10 (bucket 12:00:00 + 610 s), 109.5 s from now: past 60 s
    assert soon.status_code == 402 and "retry-after" not in soon.headers
    clock.set(T0 + timedelta(seconds=560))
    soon = call(url)  # now 49.5 s away
    assert soon.status_code == 429 and soon.headers["retry-after"] == "50"


def test_a_call_too_big_for_the_budget_by_itself_is_a_402(gateway) -> None:
    url, _ = gateway("rolling:1m", limit=30)
    denied = call(url, max_tokens=40)  # 6 + 40 = 46 can never fit in 30
    assert denied.status_code == 402 and "retry-after" not in denied.headers
    assert denied.json()["error"]["budget"]["retry_at"] is None
