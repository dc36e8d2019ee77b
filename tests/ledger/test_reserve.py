"""reserve: all or nothing over every applicable budget, with structured denials."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ledger.helpers import ALICE, BOB, T0, D, balance, cost_budget, spend, spent_held, usd
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import BudgetExceeded, ValidationError
from tokenward.ledger import DEFAULT_TTL, Hold, Ledger


def test_reserve_holds_on_the_budget(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    reservation = ledger.reserve(ALICE, usd("4"), metadata={"model": "m", "n": 3})

    assert reservation.state == "active"
    assert reservation.subject == ALICE
    assert reservation.amounts == {"cost_usd": D("4")}
    assert reservation.holds == (Hold("alice-usd", "alice", "", "cost_usd", D("4")),)
    assert reservation.created_at == T0
    assert reservation.expires_at == T0 + timedelta(minutes=10) == T0 + DEFAULT_TTL
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("4"))
    assert ledger.reservation(reservation.id) == reservation
    assert ledger.reservation("res_missing") is None


def test_a_hold_that_fits_exactly_is_admitted_and_then_nothing_more(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("2.50"))
    ledger.reserve(ALICE, usd("7.50"))  # 2.50 + 7.50 = 10: within the limit
    with pytest.raises(BudgetExceeded):
        ledger.reserve(ALICE, usd("0.000001"))
    assert spent_held(ledger, ALICE, "alice-usd") == (D("2.50"), D("7.50"))


def test_denial_names_the_budget_and_its_numbers(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    spend(ledger, ALICE, usd("7"))
    ledger.reserve(ALICE, usd("2"))

    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, usd("1.5"))  # 7 + 2 + 1.5 = 10.5 > 10

    e = denied.value
    assert (e.budget, e.scope, e.subject_id, e.meter) == ("alice-usd", "user", "alice", "cost_usd")
    assert (e.limit, e.used, e.held, e.requested) == (D("10"), D("7"), D("2"), D("1.5"))
    assert e.reset_at is None
    assert e.remaining == D("1")
    assert spent_held(ledger, ALICE, "alice-usd") == (D("7"), D("2"))


@pytest.mark.parametrize(("fine", "tight"), [("a-user", "z-team"), ("z-user", "a-team")])
def test_a_denial_by_one_budget_leaves_no_hold_on_any_other(ledger: Ledger, fine: str, tight: str) -> None:
    """Both name orders: a backend that held as it went would leave the first hold behind."""
    ledger.put_budget(cost_budget(fine, "user", "10", "alice"))
    ledger.put_budget(Budget("m-org-tokens", "org", "total_tokens", D("1000"), subject_id="acme"))
    ledger.put_budget(cost_budget(tight, "team", "1", "red"))

    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, {"cost_usd": D("2"), "total_tokens": D("100")})

    assert (denied.value.budget, denied.value.scope, denied.value.subject_id) == (tight, "team", "red")
    for name in (fine, "m-org-tokens", tight):
        assert spent_held(ledger, ALICE, name) == (D("0"), D("0"))
    # The same call within the team's limit holds on all three at once.
    reservation = ledger.reserve(ALICE, {"cost_usd": D("1"), "total_tokens": D("100")})
    assert sorted(reservation.holds, key=lambda h: h.budget) == sorted(
        [
            Hold(fine, "alice", "", "cost_usd", D("1")),
            Hold("m-org-tokens", "acme", "", "total_tokens", D("100")),
            Hold(tight, "red", "", "cost_usd", D("1")),
        ],
        key=lambda h: h.budget,
    )
    assert spent_held(ledger, ALICE, fine) == (D("0"), D("1"))
    assert spent_held(ledger, ALICE, "m-org-tokens") == (D("0"), D("100"))
    assert spent_held(ledger, ALICE, tight) == (D("0"), D("1"))


def test_a_template_applies_to_each_scope_value_separately(ledger: Ledger) -> None:
    ledger.put_budget(Budget("each-user", "user", "total_tokens", D("100")))
    ledger.reserve(ALICE, {"total_tokens": D("80")})
    ledger.reserve(BOB, {"total_tokens": D("80")})  # bob has his own 100

    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(ALICE, {"total_tokens": D("30")})  # 80 + 30 > 100

    e = denied.value
    assert (e.budget, e.scope, e.subject_id) == ("each-user", "user", "alice")
    assert (e.limit, e.used, e.held, e.requested) == (D("100"), D("0"), D("80"), D("30"))
    assert spent_held(ledger, ALICE, "each-user") == (D("0"), D("80"))
    assert spent_held(ledger, BOB, "each-user") == (D("0"), D("80"))
    ledger.reserve(BOB, {"total_tokens": D("20")})  # bob's 80 + 20 = 100 still fits
    assert spent_held(ledger, BOB, "each-user") == (D("0"), D("100"))


def test_budgets_that_do_not_apply_are_untouched(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("bob-usd", "user", "10", "bob"))
    ledger.put_budget(Budget("alice-requests", "user", "requests", D("5"), subject_id="alice"))
    ledger.put_budget(cost_budget("each-session", "session", "1"))  # ALICE has no session

    reservation = ledger.reserve(ALICE, usd("3"))

    assert reservation.holds == (Hold("alice-usd", "alice", "", "cost_usd", D("3")),)
    assert [b.budget.name for b in ledger.balances(ALICE)] == ["alice-requests", "alice-usd"]
    assert spent_held(ledger, ALICE, "alice-requests") == (D("0"), D("0"))  # meter not in the hold
    assert spent_held(ledger, BOB, "bob-usd") == (D("0"), D("0"))
    assert spent_held(ledger, Subject(user="x", session="s1"), "each-session") == (D("0"), D("0"))


def test_a_subject_no_budget_applies_to_is_admitted_with_no_holds(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "1", "alice"))
    reservation = ledger.reserve(Subject(team="blue"), usd("1000"))
    assert reservation.holds == ()
    assert ledger.balances(Subject(team="blue")) == []


def test_soft_and_shadow_budgets_never_deny_but_are_held_on(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("soft-team", "team", "1", "red", mode="soft"))
    ledger.put_budget(cost_budget("shadow-user", "user", "1", mode="shadow"))
    ledger.put_budget(cost_budget("hard-org", "org", "100", "acme"))

    ledger.reserve(ALICE, usd("5"))
    ledger.reserve(ALICE, usd("5"))

    assert spent_held(ledger, ALICE, "soft-team") == (D("0"), D("10"))
    assert spent_held(ledger, ALICE, "shadow-user") == (D("0"), D("10"))
    assert spent_held(ledger, ALICE, "hard-org") == (D("0"), D("10"))
    soft = balance(ledger, ALICE, "soft-team")
    assert soft.remaining == D("-9")


def test_c41_overspent_user_denies_even_when_the_team_has_room(ledger: Ledger) -> None:
    """C41: user budget 1.00 with 1.20 spent, team 100.00 with 5.00 spent, reserve 0.01: deny naming user."""
    user = Budget.from_dict({"scope": "user", "id": "user-fx41", "meter": "cost_usd", "limit": "1.00"})
    team = Budget.from_dict({"scope": "team", "id": "team-fx41", "meter": "cost_usd", "limit": "100.00"})
    ledger.put_budget(user)
    ledger.put_budget(team)
    subject = Subject(key="key-fx41", user="user-fx41", team="team-fx41")
    spend(ledger, subject, usd("1.20"))  # both budgets: user 1.20, team 1.20
    spend(ledger, Subject(team="team-fx41"), usd("3.80"))  # the team only: team 5.00
    assert spent_held(ledger, subject, user.name) == (D("1.20"), D("0"))
    assert spent_held(ledger, subject, team.name) == (D("5.00"), D("0"))

    with pytest.raises(BudgetExceeded) as denied:
        ledger.reserve(subject, usd("0.01"))

    e = denied.value
    assert (e.budget, e.scope, e.subject_id, e.meter) == (user.name, "user", "user-fx41", "cost_usd")
    assert (e.limit, e.used, e.held, e.requested) == (D("1.00"), D("1.20"), D("0"), D("0.01"))
    assert spent_held(ledger, subject, team.name) == (D("5.00"), D("0"))  # no hold left on the team
    # Control: the same team without the overspent user is admitted.
    ledger.reserve(Subject(key="key-other", team="team-fx41"), usd("0.01"))
    assert spent_held(ledger, subject, team.name) == (D("5.00"), D("0.01"))


def test_c43_a_zero_hold_is_admitted_even_on_an_overspent_budget(ledger: Ledger) -> None:
    """C43: a free call (0 USD) against a key budget of 1.00 with 1.20 spent is admitted."""
    ledger.put_budget(cost_budget("key-usd", "key", "1.00", "key-fx43"))
    subject = Subject(key="key-fx43")
    spend(ledger, subject, usd("1.20"))
    ledger.reserve(subject, {"cost_usd": D("0"), "requests": D("1")})
    assert spent_held(ledger, subject, "key-usd") == (D("1.20"), D("0"))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(subject, usd("0.000001"))


@pytest.mark.parametrize("amount", [D("-1"), D("NaN"), D("Infinity"), 0.5, "1", True])
def test_a_bad_amount_is_a_validation_error_and_holds_nothing(ledger: Ledger, amount: object) -> None:
    """A negative hold would lower ``held`` and lift the cap for everyone else."""
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    with pytest.raises(ValidationError) as error:
        ledger.reserve(ALICE, {"cost_usd": amount})  # type: ignore[dict-item]
    assert error.value.field == "cost_usd"
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("0"))
    with pytest.raises(ValidationError):
        spend(ledger, ALICE, {"cost_usd": amount})  # type: ignore[dict-item]
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("0"))
    assert ledger.events() == []


def test_integer_amounts_are_accepted(ledger: Ledger) -> None:
    ledger.put_budget(Budget("alice-tokens", "user", "total_tokens", D("100"), subject_id="alice"))
    ledger.reserve(ALICE, {"total_tokens": 60})  # type: ignore[dict-item]
    assert spent_held(ledger, ALICE, "alice-tokens") == (D("0"), D("60"))
