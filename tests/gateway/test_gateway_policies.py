"""Fallbacks admitted attempt by attempt (C43), budget headers and 429 retry-after, the subject
from the request body, and a client that disconnects while the upstream keeps going (C31)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fixtures import KEY
from tests.support.servers import free_port
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage

MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_c43_a_paid_fallback_is_checked_before_it_is_called(start_gateway, fake, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "models": {
                    "fixture-free-primary": {"input": "0", "output": "0"},
                    "fixture-paid-fallback": {"input": "3", "output": "15"},
                }
            }
        )
    )
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the primary fails to connect
    gateway = start_gateway(
        budgets=[{"name": "key-usd", "scope": "key", "id": "test-key", "meter": "cost_usd", "limit": "1.00"}],
        prices=str(prices),
        upstreams=[
            {"name": "primary", "provider": "fake", "base_url": dead, "models": ["fixture-free-primary"]},
            {
                "name": "fallback",
                "provider": "fake",
                "base_url": fake.url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
                "models": ["fixture-paid-fallback"],
            },
        ],
        fallbacks={"fixture-free-primary": ["fixture-paid-fallback"]},
    )
    observer = gateway.observer()
    observer.settle(  # the key had already spent $1.20 of its $1.00
        None,
        UsageEvent(
            "earlier",
            observer.clock.now(),
            Subject(key="test-key"),
            Usage(0, 0),
            charged={"cost_usd": Decimal("1.20")},
        ),
    )
    httpx.delete(f"{fake.url}/_fake/requests")
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fixture-free-primary", "messages": MESSAGES},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 402
    assert response.json()["error"]["budget"]["budget"] == "key-usd"
    assert httpx.get(f"{fake.url}/_fake/requests").json() == []  # the paid fallback was never called
    events = gateway.observer().events()
    assert [(e.model, e.status) for e in events] == [(None, "ok"), ("fixture-free-primary", "upstream_error")]
    (balance,) = gateway.observer().balances(Subject(key="test-key"))
    assert balance.spent == Decimal("1.20") and balance.held == 0


def test_fallback_answers_when_the_primary_fails(start_gateway, fake) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(
        upstreams=[
            {"name": "primary", "provider": "fake", "base_url": dead, "models": ["gpt-4o"]},
            {"name": "backup", "provider": "fake", "base_url": fake.url, "api_key_env": "FAKE_UPSTREAM_KEY"},
        ],
        fallbacks={"gpt-4o": ["gpt-4o-mini"]},
    )
    reply = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert reply.model == "gpt-4o"  # the second upstream serving gpt-4o answered first
    events = gateway.observer().events()
    assert [e.status for e in events] == ["upstream_error", "ok"]
    assert events[1].metadata["upstream"] == "backup"


def test_budget_headers_on_answers_and_retry_after_on_a_denial(start_gateway) -> None:
    budgets = [
        {"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100},
        {
            "name": "daily",
            "scope": "user",
            "id": "alice",
            "meter": "total_tokens",
            "limit": 1000,
            "window": "day",
        },
    ]
    gateway = start_gateway(budgets=budgets, retry_horizon_seconds=86400)
    headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "s-h"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
    first = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == 200
    assert first.headers["x-tokenward-budget"] == "sess"  # 74 % left against the day's 97 %
    assert first.headers["x-ratelimit-limit"] == "100" and first.headers["x-ratelimit-remaining"] == "74"
    assert "x-ratelimit-reset" not in first.headers  # this budget never resets
    for _ in range(2):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    denied = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert denied.status_code == 402  # no window: never resets, so not worth retrying
    assert "retry-after" not in denied.headers
    daily_only = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**body, "max_tokens": 2000},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert daily_only.status_code == 200  # clamped to what the day allows
    while True:
        denied_daily = httpx.post(
            f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        )
        if denied_daily.status_code != 200:
            break
    assert denied_daily.status_code == 429  # the day resets within the (wide) retry horizon
    assert 0 < int(denied_daily.headers["retry-after"]) <= 86400
    assert denied_daily.headers["x-tokenward-budget"] == "daily"


def test_the_body_user_is_charged_only_with_permission(start_gateway) -> None:
    gateway = start_gateway()
    for key in (KEY, "tw-admin-key"):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "user": "carol"},
            headers={"authorization": f"Bearer {key}"},
        )
    ordinary, overriding = gateway.observer().events()
    assert ordinary.subject.user == "demo/alice" and ordinary.metadata["end_user"] == "carol"
    assert overriding.subject.user == "carol"


@pytest.mark.parametrize(("grace", "basis"), [(5.0, "provider_usage"), (0.0, "aborted_estimated")])
def test_c31_a_client_that_hangs_up_is_settled_with_the_real_usage_when_it_arrives(
    start_gateway, grace: float, basis: str
) -> None:
    gateway = start_gateway(disconnect_grace_seconds=grace)
    body = {
        "model": "gpt-4.1",
        "input": "Say hello",
        "stream": True,
        "fake": {"reply_tokens": 60, "chunk_tokens": 5, "chunk_delay_ms": 30},
    }
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST", f"{gateway.url}/v1/responses", json=body, headers={"authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        deltas = 0
        for line in response.iter_lines():  # hang up after two text deltas
            deltas += '"response.output_text.delta"' in line
            if deltas == 2:
                break
    deadline = time.monotonic() + 10
    while not gateway.observer().events() and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = gateway.observer().events()
    assert event.status == "client_aborted" and event.metadata["cost_basis"] == basis
    if basis == "provider_usage":
        assert (event.usage.input_tokens, event.usage.output_tokens) == (6, 60) and event.usage.complete
    else:
        assert 0 < event.usage.output_tokens < 60 and event.usage.output_source == "counted_stream_text"


def test_degrade_policy_switches_models_when_a_budget_runs_low(start_gateway) -> None:
    gateway = start_gateway(
        budgets=[{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100}],
        degrade={"below": "0.5", "models": {"gpt-4o": "gpt-4o-mini"}},
    )
    client = openai.OpenAI(
        api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0, default_headers={"x-tokenward-session": "d"}
    )
    models = [
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20).model
        for _ in range(3)
    ]
    assert models == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]  # 48 of 100 left before the third call
    events = gateway.observer().events()
    assert events[-1].model == "gpt-4o-mini" and events[-1].metadata["degraded"] == {"model": "gpt-4o-mini"}
    (balance,) = gateway.observer().balances(Subject(session="demo/d"))
    assert balance.held == 0 and balance.spent == 26 * 3


def test_a_call_the_budget_refuses_is_rescued_by_the_cheaper_model(start_gateway) -> None:
    # gpt-4o at $2.50/$10 per 1M: 9 prompt + 16 output tokens need $0.0001825 > $0.0001;
    # gpt-4o-mini at $0.15/$0.60: 9 + 20 need $0.00001335
    gateway = start_gateway(
        budgets=[{"name": "usd", "scope": "session", "meter": "cost_usd", "limit": "0.0001"}],
        degrade={"models": {"gpt-4o": "gpt-4o-mini"}},
    )
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 20},
        headers={"authorization": f"Bearer {KEY}", "x-tokenward-session": "r"},
    )
    assert reply.status_code == 200 and reply.json()["model"] == "gpt-4o-mini"
    (event,) = gateway.observer().events()
    assert event.metadata["degraded"] == {"model": "gpt-4o-mini"}
