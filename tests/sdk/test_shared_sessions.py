"""Two workers in one session (issue 14, item 7), with the official ``openai`` client wrapped by
``tokenward.Guard`` against the fake provider.

Both workers enter ``guard.session("task-42", budget="total_tokens=130")`` on one SQLite ledger.
On the branch point the first to leave deleted the budget and the other ran unlimited (+220% in
the issue's run); now the budget stays until the last worker leaves. Each fake call of these tests
costs 6 prompt + 20 reply = 26 tokens (the fake's documented rules), so 130 tokens pay for 5 (the
last one clamped to the room the prompt estimate leaves).
"""

from __future__ import annotations

import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.errors import BudgetExceeded, ConfigError

MESSAGES = [{"role": "user", "content": "Say hello"}]
BUDGET = "session=task-42:total_tokens"


def _worker(url: str, fake) -> tuple[tokenward.Guard, openai.OpenAI]:
    guard = tokenward.Guard(url)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    return guard, client


def test_the_first_worker_to_leave_does_not_lift_the_others_limit(tmp_path, fake) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    a, client_a = _worker(url, fake)
    b, client_b = _worker(url, fake)
    try:
        with b.session("task-42", budget="total_tokens=130"):
            with a.session("task-42", budget="total_tokens=130"):
                client_a.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
            assert b.ledger.get_budget(BUDGET) is not None  # worker a left; worker b still runs
            calls = 0
            with pytest.raises(BudgetExceeded):
                for _ in range(20):  # without a budget, all 20 would run
                    client_b.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
                    calls += 1
            # 1 call by a + 4 by b: 4 x 26 = 104 tokens, then the 5th is clamped to what is left
            assert calls == 4
        assert b.ledger.get_budget(BUDGET) is None  # the last one out deletes it
        spent = sum(e.charged["total_tokens"] for e in b.ledger.events(subject=Subject(session="task-42")))
        assert 104 < spent <= 130  # never above the limit (the branch point: 21 x 26 = 546)
    finally:
        a.close()
        b.close()


def test_two_workers_declaring_different_limits_is_a_config_error(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    a, b = tokenward.Guard(url), tokenward.Guard(url)
    try:
        with a.session("task-42", budget="total_tokens=130"):
            with (
                pytest.raises(ConfigError, match=r"total_tokens=130.*total_tokens=500"),
                b.session("task-42", budget="total_tokens=500"),
            ):
                pass  # pragma: no cover - refused on entry
            assert a.ledger.get_budget(BUDGET).limit == 130  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()
