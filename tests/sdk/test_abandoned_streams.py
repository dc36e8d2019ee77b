"""An SDK stream created and never read is charged (issue 14, item 5).

The official ``openai`` client, wrapped by ``tokenward.Guard``, opens a streamed chat completion
against the fake provider and drops it unread. The call reached the provider, which may have
generated everything the hold allowed: on the branch point its hold expired uncharged, with no
event; now the hold (the prompt estimate plus the 50-token output bound) is charged with an event
``reclaimed`` once it expires.
"""

from __future__ import annotations

import gc
import time
from datetime import timedelta

import openai

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.guard.flow import GuardSettings


def test_a_stream_created_and_never_read_is_charged_its_hold(tmp_path, fake) -> None:
    guard = tokenward.Guard(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        budgets=["user=alice:total_tokens=1000"],
        settings=GuardSettings(ttl=timedelta(seconds=0.6)),
        user="alice",
    )
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    try:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=50,
            stream=True,
        )
        del stream  # never read, never closed
        gc.collect()
        time.sleep(1.0)  # its reservation is no longer renewed and expires
        assert guard.ledger.reap() == 1
        (event,) = guard.ledger.events(subject=Subject(user="alice"))
        assert event.status == "reclaimed" and event.metadata["cost_basis"] == "hold"
        held = event.charged["total_tokens"]
        assert held >= 50 + 6  # at least the output bound and the fake's 6 prompt tokens
        (balance,) = guard.ledger.balances(Subject(user="alice"))
        assert (balance.spent, balance.held) == (held, 0)
    finally:
        guard.close()
