"""settle, release, reap and idempotency: what happens to a hold after reserve."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ledger.helpers import ALICE, BOB, T0, D, cost_budget, event, spend, spent_held, usd
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget, Subject
from tokenward.errors import BudgetExceeded, ValidationError
from tokenward.ledger import Ledger


@pytest.fixture
def alice10(ledger: Ledger) -> Ledger:
    """A ledger with one hard budget: alice, 10 USD."""
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    return ledger


# -- settle ----------------------------------------------------------------------------------------
def test_settle_replaces_the_hold_with_the_charge(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("4"))
    stored = alice10.settle(reservation.id, event(ALICE, usd("3"), at=T0, request_id="req-1"))

    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))
    assert stored.request_id == "req-1"
    assert stored.reservation_id == reservation.id
    assert stored.held == {"cost_usd": D("4")}
    assert stored.charged == {"cost_usd": D("3")}
    assert stored.overage == {}
    assert alice10.reservation(reservation.id) is None  # deleted by the settle: the event is the record
    assert alice10.events() == [stored]


def test_settle_is_idempotent_by_request_id(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("4"))
    first = alice10.settle(reservation.id, event(ALICE, usd("3"), at=T0, request_id="req-1"))

    again = alice10.settle(reservation.id, event(ALICE, usd("9"), at=T0, request_id="req-1"))
    direct = alice10.settle(None, event(ALICE, usd("9"), at=T0, request_id="req-1"))

    assert again == first
    assert direct == first
    assert again.charged == {"cost_usd": D("3")}
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))
    assert [e.request_id for e in alice10.events()] == ["req-1"]


def test_overage_above_the_hold_is_charged_and_visible(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("1.00"))
    stored = alice10.settle(reservation.id, event(ALICE, usd("1.50"), at=T0))

    assert stored.overage == {"cost_usd": D("0.50")}
    assert alice10.events()[0].overage == {"cost_usd": D("0.50")}
    assert spent_held(alice10, ALICE, "alice-usd") == (D("1.50"), D("0"))


def test_an_overage_counts_against_the_budget(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("10"))
    alice10.settle(reservation.id, event(ALICE, usd("10.25"), at=T0))
    assert spent_held(alice10, ALICE, "alice-usd") == (D("10.25"), D("0"))
    with pytest.raises(BudgetExceeded) as denied:
        alice10.reserve(ALICE, usd("0.01"))
    assert (denied.value.used, denied.value.remaining) == (D("10.25"), D("0"))


def test_settle_after_the_reservation_expired_and_was_reaped_still_charges(
    alice10: Ledger, clock: ManualClock
) -> None:
    reservation = alice10.reserve(ALICE, usd("4"), ttl=timedelta(seconds=60))
    clock.advance(61)
    assert alice10.reap() == 1
    assert alice10.reservation(reservation.id).state == "expired"  # type: ignore[union-attr]
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))

    stored = alice10.settle(reservation.id, event(ALICE, usd("4"), at=T0))

    assert spent_held(alice10, ALICE, "alice-usd") == (D("4"), D("0"))
    assert stored.reservation_id == reservation.id
    assert stored.held == {"cost_usd": D("4")}
    assert alice10.reservation(reservation.id) is None


def test_settle_after_expiry_before_any_reap_releases_the_hold_once(
    alice10: Ledger, clock: ManualClock
) -> None:
    reservation = alice10.reserve(ALICE, usd("4"), ttl=timedelta(seconds=60))
    clock.advance(61)
    alice10.settle(reservation.id, event(ALICE, usd("2"), at=T0))
    assert alice10.reap() == 0
    assert spent_held(alice10, ALICE, "alice-usd") == (D("2"), D("0"))


def test_settle_without_reservation_charges_every_applicable_budget(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("team-usd", "team", "100", "red"))
    ledger.put_budget(Budget("each-user-tokens", "user", "total_tokens", D("1000")))
    ledger.put_budget(cost_budget("blue-usd", "team", "100", "blue"))

    stored = ledger.settle(None, event(ALICE, {"cost_usd": D("0.30"), "total_tokens": D("150")}, at=T0))

    assert stored.reservation_id is None
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.30"), D("0"))
    assert spent_held(ledger, ALICE, "team-usd") == (D("0.30"), D("0"))
    assert spent_held(ledger, ALICE, "each-user-tokens") == (D("150"), D("0"))
    assert spent_held(ledger, BOB, "each-user-tokens") == (D("0"), D("0"))
    assert spent_held(ledger, Subject(team="blue"), "blue-usd") == (D("0"), D("0"))


def test_settle_charges_only_the_meters_of_its_budgets(ledger: Ledger) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(Budget("alice-requests", "user", "requests", D("3"), subject_id="alice"))
    reservation = ledger.reserve(ALICE, {"cost_usd": D("1"), "requests": D("1")})
    ledger.settle(reservation.id, event(ALICE, {"cost_usd": D("0.40"), "requests": D("1")}, at=T0))
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0.40"), D("0"))
    assert spent_held(ledger, ALICE, "alice-requests") == (D("1"), D("0"))


# -- release ---------------------------------------------------------------------------------------
def test_release_returns_the_hold_once(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("4"))
    assert alice10.release(reservation.id) is True
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))
    assert alice10.reservation(reservation.id) is None  # deleted by the release
    assert alice10.release(reservation.id) is False
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))
    assert alice10.events() == []


def test_release_after_settle_is_a_no_op(alice10: Ledger) -> None:
    reservation = alice10.reserve(ALICE, usd("4"))
    alice10.settle(reservation.id, event(ALICE, usd("3"), at=T0))
    assert alice10.release(reservation.id) is False
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))
    assert alice10.reservation(reservation.id) is None


def test_release_of_an_unknown_or_expired_reservation_is_a_no_op(alice10: Ledger, clock: ManualClock) -> None:
    assert alice10.release("res_unknown") is False
    reservation = alice10.reserve(ALICE, usd("4"), ttl=timedelta(seconds=5))
    clock.advance(5)
    assert alice10.reap() == 1
    assert alice10.release(reservation.id) is False
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))


def test_release_frees_room_for_the_next_call(alice10: Ledger) -> None:
    first = alice10.reserve(ALICE, usd("7"))
    with pytest.raises(BudgetExceeded):
        alice10.reserve(ALICE, usd("7"))
    alice10.release(first.id)
    alice10.reserve(ALICE, usd("7"))
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("7"))


# -- reap and expiry -------------------------------------------------------------------------------
def test_reap_releases_reservations_past_their_ttl(alice10: Ledger, clock: ManualClock) -> None:
    short = alice10.reserve(ALICE, usd("2"), ttl=timedelta(seconds=30))
    long = alice10.reserve(ALICE, usd("3"), ttl=timedelta(seconds=90))

    clock.advance(29)
    assert alice10.reap() == 0
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("5"))

    clock.advance(1)  # exactly at expires_at: expired
    assert alice10.reap() == 1
    assert alice10.reservation(short.id).state == "expired"  # type: ignore[union-attr]
    assert alice10.reservation(long.id).state == "active"  # type: ignore[union-attr]
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("3"))

    clock.advance(60)
    assert alice10.reap() == 1
    assert alice10.reap() == 0
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))


def test_extend_keeps_a_long_call_held_past_its_first_ttl(alice10: Ledger, clock: ManualClock) -> None:
    long = alice10.reserve(ALICE, usd("6"), ttl=timedelta(seconds=30))
    clock.advance(20)
    assert alice10.extend(long.id, timedelta(seconds=30)) is True  # now expires at T0 + 50 s
    assert alice10.reservation(long.id).expires_at == T0 + timedelta(seconds=50)  # type: ignore[union-attr]

    clock.advance(20)  # 40 s in: past the first ttl, inside the extended one
    assert alice10.reap() == 0
    with pytest.raises(BudgetExceeded):
        alice10.reserve(ALICE, usd("5"))  # the 6 are still held: 4 left
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("6"))

    clock.advance(10)  # exactly at the extended expiry
    assert alice10.reap() == 1
    assert alice10.reservation(long.id).state == "expired"  # type: ignore[union-attr]
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))


def test_extend_never_shortens_a_reservation(alice10: Ledger, clock: ManualClock) -> None:
    reservation = alice10.reserve(ALICE, usd("2"), ttl=timedelta(seconds=600))
    assert alice10.extend(reservation.id, timedelta(seconds=5)) is True
    assert alice10.reservation(reservation.id).expires_at == T0 + timedelta(seconds=600)  # type: ignore[union-attr]
    clock.advance(10)
    assert alice10.reap() == 0


def test_extend_refuses_what_is_not_active(alice10: Ledger, clock: ManualClock) -> None:
    settled = alice10.reserve(ALICE, usd("1"))
    alice10.settle(settled.id, event(ALICE, usd("1"), at=T0))
    released = alice10.reserve(ALICE, usd("1"))
    alice10.release(released.id)
    lapsed = alice10.reserve(ALICE, usd("1"), ttl=timedelta(seconds=30))
    clock.advance(30)  # at its expiry, not reaped yet: too late to extend

    ttl = timedelta(seconds=60)
    assert [alice10.extend(r.id, ttl) for r in (settled, released, lapsed)] == [False, False, False]
    assert alice10.extend("res_unknown", ttl) is False
    assert alice10.reap() == 1  # the lapsed one expires as it would have
    assert spent_held(alice10, ALICE, "alice-usd") == (D("1"), D("0"))


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), 30])
def test_extend_rejects_a_ttl_that_is_not_a_positive_timedelta(alice10: Ledger, ttl: object) -> None:
    reservation = alice10.reserve(ALICE, usd("1"))
    with pytest.raises(ValidationError):
        alice10.extend(reservation.id, ttl)  # type: ignore[arg-type]


def test_a_settle_after_extend_charges_once(alice10: Ledger, clock: ManualClock) -> None:
    reservation = alice10.reserve(ALICE, usd("4"), ttl=timedelta(seconds=30))
    clock.advance(25)
    alice10.extend(reservation.id, timedelta(seconds=30))
    clock.advance(25)
    alice10.settle(reservation.id, event(ALICE, usd("3"), at=T0))
    assert alice10.reap() == 0
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))


def test_the_next_reserve_reaps_expired_holds_first(alice10: Ledger, clock: ManualClock) -> None:
    stale = alice10.reserve(ALICE, usd("8"), ttl=timedelta(seconds=30))
    clock.advance(31)
    alice10.reserve(ALICE, usd("8"))  # fits only once the stale 8 are gone
    assert alice10.reservation(stale.id).state == "expired"  # type: ignore[union-attr]
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("8"))


def test_a_denied_reserve_still_reaps(alice10: Ledger, clock: ManualClock) -> None:
    """The reap that precedes the check is kept even when the check denies."""
    stale = alice10.reserve(ALICE, usd("8"), ttl=timedelta(seconds=30))
    clock.advance(31)
    with pytest.raises(BudgetExceeded) as denied:
        alice10.reserve(ALICE, usd("11"))  # more than the whole limit
    assert denied.value.held == D("0")
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("0"))
    assert alice10.reservation(stale.id).state == "expired"  # type: ignore[union-attr]


def test_expiry_is_reaped_on_every_budget_of_the_reservation(ledger: Ledger, clock: ManualClock) -> None:
    ledger.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    ledger.put_budget(cost_budget("team-usd", "team", "10", "red"))
    ledger.reserve(ALICE, usd("6"), ttl=timedelta(minutes=1))
    ledger.reserve(BOB, usd("3"), ttl=timedelta(minutes=5))
    clock.advance(timedelta(minutes=2))
    assert ledger.reap() == 1
    assert spent_held(ledger, ALICE, "alice-usd") == (D("0"), D("0"))
    assert spent_held(ledger, ALICE, "team-usd") == (D("0"), D("3"))


# -- idempotency key on reserve --------------------------------------------------------------------
def test_an_idempotency_key_returns_the_first_reservation(alice10: Ledger) -> None:
    first = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    again = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    different = alice10.reserve(ALICE, usd("6"), idempotency_key="call-1")

    assert again.id == first.id == different.id
    assert different.amounts == {"cost_usd": D("4")}
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("4"))

    other = alice10.reserve(ALICE, usd("1"), idempotency_key="call-2")
    assert other.id != first.id
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("5"))


def test_an_idempotency_key_after_release_holds_afresh(alice10: Ledger) -> None:
    """A released reservation is deleted and its call never reached a provider: the key is free
    again, and a retry with it is a new attempt that holds."""
    first = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    alice10.release(first.id)
    again = alice10.reserve(ALICE, usd("3"), idempotency_key="call-1")
    assert again.id != first.id and again.state == "active"
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("3"))
    assert alice10.reserve(ALICE, usd("3"), idempotency_key="call-1").id == again.id  # held once


def test_an_idempotency_key_after_its_call_settled_holds_nothing_again(alice10: Ledger) -> None:
    """The reservation is deleted by the settle; a retry with the key is answered from the usage
    event recorded under it (settled, holding nothing, the amounts the call held), and settling
    that answer returns the stored event: the call is charged once, held once."""
    first = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    stored = alice10.settle(first.id, event(ALICE, usd("3"), at=T0, request_id="call-1"))
    assert alice10.reservation(first.id) is None

    again = alice10.reserve(ALICE, usd("6"), idempotency_key="call-1")

    assert (again.id, again.state, again.holds) == (first.id, "settled", ())
    assert again.amounts == {"cost_usd": D("4")}
    assert again.idempotency_key == again.request_id == "call-1"
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))  # nothing held
    assert alice10.reservation(again.id) is None
    assert alice10.settle(again.id, event(ALICE, usd("5"), at=T0, request_id="call-1")) == stored
    assert alice10.release(again.id) is False
    assert alice10.extend(again.id, timedelta(seconds=60)) is False
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))
    assert [e.request_id for e in alice10.events()] == ["call-1"]


def test_a_settled_key_is_answered_even_when_the_budget_is_spent(alice10: Ledger) -> None:
    """As with a kept reservation, a retry of a settled call is answered, not refused, when the
    budget has no room left for it."""
    first = alice10.reserve(ALICE, usd("9"), idempotency_key="call-1")
    alice10.settle(first.id, event(ALICE, usd("10"), at=T0, request_id="call-1"))
    again = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    assert (again.id, again.state, again.amounts) == (first.id, "settled", {"cost_usd": D("9")})
    with pytest.raises(BudgetExceeded):
        alice10.reserve(ALICE, usd("4"), idempotency_key="call-2")
    assert spent_held(alice10, ALICE, "alice-usd") == (D("10"), D("0"))


def test_a_key_already_charged_directly_holds_nothing(alice10: Ledger) -> None:
    """A request id charged without a reservation (``settle(None, ...)``) is a settled call too."""
    alice10.settle(None, event(ALICE, usd("2"), at=T0, request_id="call-1"))
    again = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    assert (again.id, again.state, again.holds, again.amounts) == ("call-1", "settled", (), {})
    assert spent_held(alice10, ALICE, "alice-usd") == (D("2"), D("0"))


def test_a_settle_of_a_reservation_that_is_gone_charges_once(alice10: Ledger, clock: ManualClock) -> None:
    """Settling a released (deleted) reservation still charges, in the windows of the event;
    settling it again under the same request id changes nothing."""
    reservation = alice10.reserve(ALICE, usd("4"))
    alice10.release(reservation.id)
    late = event(ALICE, usd("3"), at=T0, request_id="req-late")
    first = alice10.settle(reservation.id, late)
    again = alice10.settle(reservation.id, late)
    assert first == again
    assert (first.reservation_id, first.held) == (None, {})
    assert spent_held(alice10, ALICE, "alice-usd") == (D("3"), D("0"))
    assert [e.request_id for e in alice10.events()] == ["req-late"]


def test_a_denied_reserve_stores_nothing_under_its_key(alice10: Ledger) -> None:
    with pytest.raises(BudgetExceeded):
        alice10.reserve(ALICE, usd("11"), idempotency_key="call-1")
    admitted = alice10.reserve(ALICE, usd("4"), idempotency_key="call-1")
    assert admitted.amounts == {"cost_usd": D("4")}
    assert spent_held(alice10, ALICE, "alice-usd") == (D("0"), D("4"))


def test_spend_helper_sanity(alice10: Ledger) -> None:
    """The direct charge used to set up balances goes through settle(None, ...)."""
    stored = spend(alice10, ALICE, usd("1"))
    assert stored.reservation_id is None
    assert spent_held(alice10, ALICE, "alice-usd") == (D("1"), D("0"))
