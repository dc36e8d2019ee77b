"""Shared sessions: membership is a lease, on every backend (issue 14, item 7).

Two workers in session ``task-42``: the budget they declared stays until the *last* one leaves
(or its lease expires: a crashed worker), and two different declarations are a ConfigError that
names both. On the branch point the first worker to leave deleted the budget and the other ran
unlimited.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.ledger.conftest import Backend
from tokenward.clock import ManualClock
from tokenward.core.budgets import Budget
from tokenward.errors import ConfigError
from tokenward.ledger import Ledger

KEY = "session:task-42"
TTL = timedelta(seconds=30)


def _budget(limit: int) -> Budget:
    return Budget(
        "session=task-42:total_tokens", "session", "total_tokens", Decimal(limit), subject_id="task-42"
    )


def test_the_budget_stays_until_the_last_member_leaves(backend: Backend, ledger: Ledger) -> None:
    other = backend.open()  # the second worker: another connection (the same object for memory://)
    assert ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)]) is True
    assert other.join_lease(KEY, "worker-b", ttl=TTL, budgets=[_budget(1000)]) is False  # already made
    assert ledger.leave_lease(KEY, "worker-a") is False
    assert other.get_budget("session=task-42:total_tokens") == _budget(1000)  # worker-b still runs
    assert other.leave_lease(KEY, "worker-b") is True
    assert ledger.get_budget("session=task-42:total_tokens") is None
    assert ledger.lease_group(KEY) is None


def test_two_different_declarations_are_a_config_error_naming_both(ledger: Ledger) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)])
    with pytest.raises(ConfigError) as caught:
        ledger.join_lease(KEY, "worker-b", ttl=TTL, budgets=[_budget(2000)])
    message = str(caught.value)
    assert "total_tokens=1000" in message and "total_tokens=2000" in message and "task-42" in message
    assert ledger.get_budget("session=task-42:total_tokens") == _budget(1000)  # unchanged
    ledger.leave_lease(KEY, "worker-a")
    assert ledger.get_budget("session=task-42:total_tokens") is None


def test_a_member_declaring_nothing_joins_and_keeps_the_budget_alive(ledger: Ledger) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)])
    ledger.join_lease(KEY, "worker-b", ttl=TTL)
    ledger.leave_lease(KEY, "worker-a")
    assert ledger.get_budget("session=task-42:total_tokens") is not None
    assert ledger.leave_lease(KEY, "worker-b") is True
    assert ledger.get_budget("session=task-42:total_tokens") is None


def test_a_crashed_members_lease_expires_and_then_the_budget_goes(ledger: Ledger, clock: ManualClock) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)])
    ledger.join_lease(KEY, "worker-b", ttl=TTL, budgets=[_budget(1000)])
    ledger.leave_lease(KEY, "worker-a")  # worker-b crashes: it never leaves nor renews
    clock.advance(TTL - timedelta(seconds=1))
    ledger.reap()
    assert ledger.get_budget("session=task-42:total_tokens") is not None  # not yet expired
    clock.advance(timedelta(seconds=2))
    ledger.reap()
    assert ledger.get_budget("session=task-42:total_tokens") is None


def test_a_renewed_lease_outlives_its_first_ttl(ledger: Ledger, clock: ManualClock) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)])
    for _ in range(4):  # renewed every third of its ttl, as the SDK's renewer does
        clock.advance(TTL / 3)
        assert ledger.renew_lease(KEY, "worker-a", TTL) is True
    ledger.reap()
    assert ledger.get_budget("session=task-42:total_tokens") is not None
    clock.advance(TTL + timedelta(seconds=1))
    assert ledger.renew_lease(KEY, "worker-a", TTL) is False  # expired: gone
    ledger.reap()
    assert ledger.get_budget("session=task-42:total_tokens") is None


def test_after_a_group_ends_a_new_declaration_opens_it_again(ledger: Ledger, clock: ManualClock) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)])
    clock.advance(TTL * 2)  # worker-a crashed long ago: a new worker may declare another limit
    assert ledger.join_lease(KEY, "worker-c", ttl=TTL, budgets=[_budget(2000)]) is True
    assert ledger.get_budget("session=task-42:total_tokens") == _budget(2000)
    ledger.leave_lease(KEY, "worker-c")


def test_keep_leaves_the_budget_when_the_last_member_goes(ledger: Ledger) -> None:
    ledger.join_lease(KEY, "worker-a", ttl=TTL, budgets=[_budget(1000)], keep=True)
    assert ledger.leave_lease(KEY, "worker-a") is False
    assert ledger.get_budget("session=task-42:total_tokens") == _budget(1000)
