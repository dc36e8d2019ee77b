"""Per-model budgets in the SDK (issue 15 item 5): a wrapped ``openai`` client against the fake;
a budget with ``models`` counts only the calls sent to those models, judged again after a
degrade. A call charges 26 total tokens (6 prompt + 20 output); a second cannot fit 30."""

from __future__ import annotations

import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.guard.wire.degrade import Degrade

MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_a_session_budget_for_one_model_and_the_degrade_case(fake) -> None:
    guard = tokenward.Guard("memory://", degrade=Degrade(models={"gpt-4o": "gpt-4o-mini"}, below="0.01"))
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    strict = tokenward.Guard(guard.ledger)  # the same ledger, no degrade policy
    plain = strict.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    with guard.session("s-1", budget="total_tokens=30;models=gpt-4o"):
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            plain.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        assert denied.value.budget == "session=s-1:total_tokens:models=gpt-4o"
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        assert reply.model == "gpt-4o-mini"  # degraded, and admitted: the budget counts gpt-4o only
        (balance,) = [b for b in guard.balances() if b.budget.models]
        assert (balance.spent, balance.held) == (26, 0)
    assert [e.subject.model for e in guard.ledger.events()] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
    ]
