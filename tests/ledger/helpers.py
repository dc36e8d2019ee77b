"""Small builders shared by the ledger tests (no logic under test lives here)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.ledger import Ledger

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
"""Where the manual clock starts: Monday 2025-06-02 12:00 UTC."""

ALICE = Subject(org="acme", team="red", user="alice")
BOB = Subject(org="acme", team="red", user="bob")

_counter = iter(range(1, 10**9))


def D(value: str | int) -> Decimal:
    """A Decimal from a literal written in the test (never a float)."""
    return Decimal(value)


def usd(amount: str) -> dict[str, Decimal]:
    """A ``cost_usd`` amount mapping."""
    return {"cost_usd": Decimal(amount)}


def cost_budget(name: str, scope: str, limit: str, subject_id: str | None = None, **extra: Any) -> Budget:
    """A hard USD budget unless ``extra`` (``mode``, ``window``...) says otherwise."""
    return Budget(
        name=name, scope=scope, meter="cost_usd", limit=Decimal(limit), subject_id=subject_id, **extra
    )


def event(
    subject: Subject,
    charged: dict[str, Decimal],
    *,
    at: datetime,
    request_id: str | None = None,
    status: str = "ok",
) -> UsageEvent:
    """A usage event charging ``charged``; the usage counts are illustrative only."""
    return UsageEvent(
        request_id=request_id or f"req-{next(_counter)}",
        at=at,
        subject=subject,
        usage=Usage(input_tokens=100, output_tokens=20),
        model="fake-model",
        provider="fake",
        status=status,  # type: ignore[arg-type]
        cost_usd=charged.get("cost_usd"),
        charged=charged,
    )


def spend(
    ledger: Ledger, subject: Subject, charged: dict[str, Decimal], *, at: datetime | None = None
) -> UsageEvent:
    """Charge ``subject`` directly (a settle without reservation) at ``at`` (default: now)."""
    return ledger.settle(None, event(subject, charged, at=at or ledger.clock.now()))


def balance(ledger: Ledger, subject: Subject, budget: str, at: datetime | None = None) -> Balance:
    """The one balance of ``budget`` that applies to ``subject``."""
    found = [b for b in ledger.balances(subject, at) if b.budget.name == budget]
    assert len(found) == 1, f"{budget} applies {len(found)} times to {subject}"
    return found[0]


def spent_held(
    ledger: Ledger, subject: Subject, budget: str, at: datetime | None = None
) -> tuple[Decimal, Decimal]:
    """(spent, held) of ``budget`` for ``subject``."""
    b = balance(ledger, subject, budget, at)
    return b.spent, b.held
