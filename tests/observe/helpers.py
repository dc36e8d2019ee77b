"""Small builders shared by the observe tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.guard import Guard
from tokenward.ledger import open_ledger

T0 = datetime(2025, 5, 15, 12, 0, tzinfo=UTC)


def memory_guard(*observers: Any, start: datetime = T0) -> tuple[Guard, ManualClock]:
    """A guard over a fresh memory:// ledger driven by a manual clock."""
    clock = ManualClock(start)
    return Guard(open_ledger("memory://", clock=clock), observers=observers), clock


def event(
    request_id: str,
    at: datetime,
    *,
    session: str | None = "s-1",
    user: str | None = "alice",
    input_tokens: int = 100,
    output_tokens: int = 10,
    cached: int = 0,
    cost: str | None = "0.01",
    model: str = "gpt-4o-mini",
    **metadata: Any,
) -> UsageEvent:
    """A usage event with the charges its usage and cost imply."""
    charged = {
        "input_tokens": Decimal(input_tokens),
        "output_tokens": Decimal(output_tokens),
        "total_tokens": Decimal(input_tokens + output_tokens),
        "requests": Decimal(1),
    }
    if cost is not None:
        charged["cost_usd"] = Decimal(cost)
    return UsageEvent(
        request_id=request_id,
        at=at,
        subject=Subject(user=user, session=session),
        usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached),
        model=model,
        provider="openai",
        endpoint="openai-chat",
        cost_usd=None if cost is None else Decimal(cost),
        charged=charged,
        metadata=metadata,
    )
