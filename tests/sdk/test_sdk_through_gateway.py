"""A wrapped client whose base URL is a tokenward gateway: the gateway enforces and charges,
the wrapped client only sends its attribution, so every call is charged exactly once."""

from __future__ import annotations

import openai
import pytest

import tokenward
from tests.support.fixtures import KEY

MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_calls_are_charged_once_by_the_gateway(start_gateway) -> None:
    gateway = start_gateway()
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=1000000"])
    client = guard.wrap(openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0))
    with guard.session("s-both", agent="planner"):
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert guard.ledger.events() == []
    (balance,) = guard.ledger.balances(tokenward.Subject(session="s-both"))
    assert balance.spent == 0 and balance.held == 0  # the first call's local hold was released
    events = gateway.observer().events()
    assert len(events) == 4
    assert {(e.subject.session, e.subject.agent, e.subject.user) for e in events} == {
        ("s-both", "planner", "alice")
    }


def test_a_gateway_denial_is_raised_as_budget_exceeded(start_gateway) -> None:
    budget = {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 30}
    gateway = start_gateway(budgets=[budget], defaults={"min_output_tokens": 16})
    guard = tokenward.Guard("memory://")
    client = guard.wrap(openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=2))
    with guard.session("s-gw"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26 of 30
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert denied.value.budget == "per-session" and denied.value.limit == 30 and denied.value.used == 26
    assert len(gateway.observer().events()) == 1
