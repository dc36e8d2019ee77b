"""A wrapped client whose base URL is a tokenward gateway: the gateway enforces and charges,
the wrapped client only sends its attribution, so every call is charged exactly once."""

from __future__ import annotations

import openai
import pytest

import tokenward
from tests.support.fixtures import KEY, UPSTREAM_KEY

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
        ("demo/s-both", "demo/planner", "demo/alice")  # in the gateway key's project (tenancy)
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


def test_the_gateway_is_remembered_by_host_and_port(start_gateway, fake) -> None:
    """A gateway and a provider on the same host: only calls to the gateway's port are left to it."""
    gateway = start_gateway()
    guard = tokenward.Guard("memory://")
    via_gateway = guard.wrap(openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0))
    direct = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    via_gateway.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    via_gateway.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(guard.ledger.events()) == 1  # the direct call, charged here
    assert len(gateway.observer().events()) == 2


def test_the_guards_default_attribution_reaches_the_gateway(start_gateway) -> None:
    gateway = start_gateway()
    guard = tokenward.Guard("memory://", agent="indexer", task="nightly")
    client = guard.wrap(openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # outside any session
    (event,) = gateway.observer().events()
    assert (event.subject.agent, event.subject.task, event.subject.user) == (
        "demo/indexer",
        "demo/nightly",
        "demo/alice",
    )
