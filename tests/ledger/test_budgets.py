"""Budgets in the ledger: put / get / list / delete, and replacing one keeps its balances."""

from __future__ import annotations

import pytest

from tests.ledger.conftest import Backend
from tests.ledger.helpers import ALICE, D, cost_budget, spend, spent_held, usd
from tokenward.core.budgets import Budget
from tokenward.core.windows import Window
from tokenward.errors import BudgetExceeded
from tokenward.ledger import Ledger


def test_put_then_get_returns_the_same_budget(ledger: Ledger) -> None:
    budget = Budget(
        name="each-user-monthly",
        scope="user",
        meter="total_tokens",
        limit=D("200000"),
        window=Window(unit="month", time_zone="Europe/Paris"),
        mode="soft",
        unpriced="allow",
    )
    ledger.put_budget(budget)
    assert ledger.get_budget("each-user-monthly") == budget
    assert ledger.get_budget("missing") is None


def test_budgets_lists_every_budget_by_name(ledger: Ledger) -> None:
    for name in ("b-team", "c-org", "a-user"):
        ledger.put_budget(cost_budget(name, "user", "1"))
    assert [b.name for b in ledger.budgets()] == ["a-user", "b-team", "c-org"]


def test_empty_ledger_has_no_budgets(ledger: Ledger) -> None:
    assert ledger.budgets() == []


def test_delete_budget(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "5", "alice"))
    ledger.put_budget(cost_budget("team-usd", "team", "50", "red"))
    charged = spend(ledger, ALICE, usd("1.25"))

    assert ledger.delete_budget("alice-usd") is True
    assert ledger.get_budget("alice-usd") is None
    assert [b.name for b in ledger.budgets()] == ["team-usd"]
    assert ledger.delete_budget("alice-usd") is False
    assert ledger.delete_budget("never-existed") is False
    # The deleted budget no longer applies; its events stay.
    assert [b.budget.name for b in ledger.balances(ALICE)] == ["team-usd"]
    assert [e.request_id for e in ledger.events()] == [charged.request_id]


def test_replacing_a_budget_keeps_its_balances(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("4"))
    ledger.reserve(ALICE, usd("3"))

    ledger.put_budget(cost_budget("alice-usd", "user", "20", "alice"))

    assert ledger.get_budget("alice-usd").limit == D("20")  # type: ignore[union-attr]
    assert spent_held(ledger, ALICE, "alice-usd") == (D("4"), D("3"))
    # 4 spent + 3 held + 13 = 20: fits exactly under the new limit, and then nothing more does.
    ledger.reserve(ALICE, usd("13"))
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("0.01"))
    assert (denied.value.limit, denied.value.used, denied.value.held) == (D("20"), D("4"), D("16"))


def test_lowering_a_limit_below_the_balance_denies_at_once(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("4"))
    ledger.reserve(ALICE, usd("3"))
    ledger.put_budget(cost_budget("alice-usd", "user", "5", "alice"))
    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("0.01"))  # 4 + 3 + 0.01 > 5
    assert (denied.value.used, denied.value.held, denied.value.requested) == (D("4"), D("3"), D("0.01"))


def test_budgets_are_shared_by_every_connection(backend: Backend) -> None:
    first = backend.open()
    first.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    second = backend.reader()
    assert [b.name for b in second.budgets()] == ["alice-usd"]
    second.put_budget(cost_budget("alice-usd", "user", "7", "alice"))
    second.delete_budget("nothing")
    assert first.get_budget("alice-usd").limit == D("7")  # type: ignore[union-attr]
    second.delete_budget("alice-usd")
    assert first.budgets() == []
