"""The context-growth detector's opt-in ``fit`` action (issue 19, item 3): once a session's prompt
keeps growing, the SDK fits its history on the next call (and after), the call's usage event
records it, and the finding is reported with the action."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.errors import ConfigError
from tokenward.observe.actions import Anomalies
from tokenward.observe.anomalies import ContextGrowthDetector


def test_growing_history_is_fitted_after_the_finding(fake) -> None:
    found: list[tuple[str, str]] = []
    watcher = Anomalies(
        "memory://",
        actions={"context_growth": "fit"},
        growth=ContextGrowthDetector(steps=3, ratio=Decimal(2)),
        on_finding=lambda finding, action: found.append((finding.kind, action)),
        background=False,
        fit_share="0.5",
    )
    guard = tokenward.Guard("memory://", observers=[watcher], on_unattributed="ignore")
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    history = [{"role": "system", "content": "You are terse."}]
    sent: list[int] = []
    try:
        with guard.session("s-grow"):
            for step in range(8):
                history.append({"role": "user", "content": f"step {step}: " + "tell me more " * 10})
                reply = client.chat.completions.create(model="gpt-4o-mini", max_tokens=10, messages=history)
                history.append({"role": "assistant", "content": reply.choices[0].message.content})
                received = httpx.get(
                    f"{fake.url}/_fake/requests", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}
                ).json()
                sent.append(len(received[-1]["body"]["messages"]))
        events = guard.ledger.events(subject=Subject(session="s-grow"))
    finally:
        guard.close()
    assert [f for f in found if f[0] == "context_growth"] == [("context_growth", "fit")]
    fired = next(i for i, e in enumerate(events) if "fitted" in e.metadata)
    assert fired > 0 and all("fitted" not in e.metadata for e in events[:fired])
    # Before the finding every message was sent; from the next call on, the history is fitted.
    assert sent[:fired] == [2 * k + 2 for k in range(fired)]
    for k in range(fired, 8):
        note = events[k].metadata["fitted"]
        assert note["dropped"] > 0 and note["input_tokens"] <= note["max_input_tokens"]
        assert sent[k] == 2 * k + 2 - note["dropped"]
        # the bound is half the prompt that fired the finding (the guard's estimate of it)
        assert note["max_input_tokens"] == events[fired - 1].usage.input_tokens // 2
    assert events[-1].usage.input_tokens < events[fired - 1].usage.input_tokens


def test_fit_is_for_context_growth_only() -> None:
    with pytest.raises(ConfigError, match="'fit' applies to context_growth only"):
        Anomalies("memory://", actions={"loop": "fit"}, background=False)
