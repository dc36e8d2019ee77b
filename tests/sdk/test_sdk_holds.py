"""The SDK holds what can be billed, as the gateway does: stored Responses turns, the service tier.

Counts by the fake's rules: ``input: "Say hello"`` is 6 prompt tokens, ``"Again"`` 5, answers 20;
a call continuing response ``R`` is billed ``R``'s input plus output on top (26, then 51).
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.errors import BudgetExceeded, ValidationError
from tokenward.guard import GuardSettings


def _guard() -> tokenward.Guard:
    """A guard whose calls without max_tokens hold 20 output tokens (the fake's answer)."""
    settings = GuardSettings(default_max_output_tokens=20, service_tier="default")
    return tokenward.Guard("memory://", settings=settings, user="alice")


def _client(fake, guard: tokenward.Guard) -> openai.OpenAI:
    return guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))


def test_a_wrapped_client_holds_the_stored_turns_it_continues(fake) -> None:
    guard = _guard()
    client = _client(fake, guard)
    with guard.session("chain"):
        first = client.responses.create(model="gpt-4o-mini", input="Say hello")
        second = client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id=first.id)
        client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id=second.id)
        with pytest.raises((ValidationError, openai.APIError)) as unknown:
            client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id="resp_elsewhere")
    assert "previous_response_id" in str(unknown.value)
    events = guard.ledger.events(subject=Subject(session="chain"))
    assert [e.usage.input_tokens for e in events] == [6, 31, 56]
    assert all(e.overage == {} for e in events)


def test_a_wrapped_client_holds_priority_at_its_rate(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["user=alice:cost_usd=0.015;action=deny"], user="alice")
    client = _client(fake, guard)
    messages = [{"role": "user", "content": "Say hello"}]
    with pytest.raises((BudgetExceeded, openai.APIError)) as denied:
        client.chat.completions.create(
            model="gpt-5", messages=messages, max_completion_tokens=1000, service_tier="priority"
        )
    # (9 x $2.50 + 1000 x $20) / 1M: priority, not the default $1.25 / $10
    assert "0.0200225" in str(denied.value)
    reply = client.chat.completions.create(
        model="gpt-5", messages=messages, max_completion_tokens=1000, service_tier="default"
    )
    assert reply.usage is not None
    assert guard.ledger.events()[0].cost_usd == (6 * Decimal("1.25") + 20 * 10) / 1_000_000


def test_a_wrapped_client_records_the_conversations_it_makes(fake) -> None:
    guard = _guard()
    client = _client(fake, guard)
    with guard.session("conv"):
        made = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Be nice."}])
        reply = client.responses.create(model="gpt-4o-mini", input="Say hello", conversation=made.id)
    assert reply.usage is not None and reply.usage.input_tokens == 7 + 6
    made_event, call = guard.ledger.events(subject=Subject(session="conv"))
    assert made_event.metadata == {"conversation": made.id, "context_tokens": 10} and call.overage == {}
