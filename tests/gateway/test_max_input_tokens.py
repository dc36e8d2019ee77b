"""A budget's ``max_input_tokens`` (issue 19, item 3): a prompt over it is refused before anything
is held or sent, with a 400 naming the budget (gateway), or :class:`tokenward.errors.PromptTooLarge`
(SDK). The long prompt is 200 words, so at least 200 tokens in any tokenizer: far over 50; the
short one is two words."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import KEY, UPSTREAM_KEY
from tokenward.core.budgets import Budget, Subject, parse_budget_spec
from tokenward.errors import ConfigError, PromptTooLarge

LONG = [{"role": "user", "content": "word " * 200}]
SHORT = [{"role": "user", "content": "Say hello"}]
BUDGET = {
    "name": "alice-prompts", "scope": "user", "id": "alice", "meter": "total_tokens",
    "limit": "100000", "max_input_tokens": 50,
}  # fmt: skip


def _fake_requests(fake) -> int:
    return len(
        httpx.get(f"{fake.url}/_fake/requests", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}).json()
    )


def test_gateway_refuses_a_prompt_over_the_bound_with_a_400(start_gateway, fake) -> None:
    gateway = start_gateway(budgets=[BUDGET])
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    assert (
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=SHORT).usage.total_tokens
        > 0
    )
    sent = _fake_requests(fake)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=LONG)
    error = caught.value.response.json()["error"]
    assert "alice-prompts" in error["message"] and "max_input_tokens" in error["message"]
    assert error["param"] == "messages"
    claude = anthropic.Anthropic(api_key=KEY, base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=LONG)
    assert "alice-prompts" in refused.value.response.json()["error"]["message"]
    assert _fake_requests(fake) == sent  # nothing reached the provider
    observer = gateway.observer()
    try:
        assert len(observer.events()) == 1  # only the short call
        (balance,) = [
            b
            for b in observer.balances(Subject(user="alice", project="demo"))
            if b.budget.name == "alice-prompts"
        ]
        assert balance.held == 0
    finally:
        observer.close()


def test_sdk_raises_prompt_too_large_and_the_spec_option(fake) -> None:
    guard = tokenward.Guard(
        "memory://", budgets=["user=alice:total_tokens=100000;max_input_tokens=50"], user="alice"
    )
    try:
        client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=SHORT)
        with pytest.raises(PromptTooLarge) as caught:
            client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=LONG)
        assert caught.value.budget == "user=alice:total_tokens=100000" and caught.value.input_tokens > 200
        assert len(guard.ledger.events()) == 1
    finally:
        guard.close()
    assert parse_budget_spec("user:total_tokens=9;max_input_tokens=8_000").max_input_tokens == 8000
    assert Budget.from_dict(Budget.from_dict(BUDGET).to_dict()).max_input_tokens == 50
    assert "max_input_tokens" not in parse_budget_spec("user:total_tokens=9").to_dict()
    with pytest.raises(ConfigError, match="max_input_tokens must be a positive whole number"):
        Budget.from_dict({**BUDGET, "max_input_tokens": 0})
