"""Budget utilisation: how much of each budget instance its current window has used.

Computed from the usage events' charges (``charged``, by meter) over each budget's current
window, for every scope value that has spent in it, so it works on any ledger. The instances are
those the ledger charges (:func:`~tokenward.core.budgets.applicable`): none of a template for a
value whose fixed budget ``overrides`` it, as ``tokenward balances`` shows. Manual ledger
adjustments (credits, refunds), when the ledger records them apart from usage events, are not
included; the live ``tokenward balances`` command reads the ledger's own balances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tokenward.clock import utc
from tokenward.core.budgets import Budget, applicable
from tokenward.observe.alerts import _is_control
from tokenward.observe.forecast import forecast_window
from tokenward.observe.reports.output import Table
from tokenward.observe.rows import Row

__all__ = ["UTILISATION_FIELDS", "Utilisation", "utilisation", "utilisation_table"]

ZERO = Decimal(0)
UTILISATION_FIELDS = frozenset({"charged", "tags"})


@dataclass(frozen=True, slots=True)
class Utilisation:
    """One budget instance in its current window.

    Attributes:
        budget: the budget.
        subject_id: the scope value.
        window_start / reset_at: the window (None: no window).
        spent: charges to the budget's meter in the window.
        projected: the linear projection to the window's end (None: no window).
        projected_cross_at: when the projection reaches the limit, inside the window.
    """

    budget: Budget
    subject_id: str
    window_start: datetime | None
    reset_at: datetime | None
    spent: Decimal
    projected: Decimal | None
    projected_cross_at: datetime | None

    @property
    def ratio(self) -> Decimal | None:
        """Spent over limit (None for a zero limit)."""
        return None if self.budget.limit == 0 else self.spent / self.budget.limit


def utilisation(rows: Iterable[Row], budgets: Iterable[Budget], now: datetime) -> list[Utilisation]:
    """Every budget instance with spend in its window containing ``now``, fullest first.

    Args:
        rows: usage rows (at least those of the longest current window), with ``charged``.
        budgets: the ledger's budgets (tokenward's pause/stop budgets are skipped).
        now: the instant whose windows are reported.
    """
    now = utc(now)
    active = [b for b in budgets if not _is_control(b.name)]
    bounds = {b.name: (b.window.start(now), b.window.reset_at(now)) for b in active}
    spent: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        charged = row.charged or {}
        if not charged or row.at > now:
            continue
        # The budgets the ledger charged, as `tokenward balances` lists them: a template's
        # instance is left out for a value whose fixed budget overrides it.
        for budget, value in applicable(active, row.subject()):
            amount = charged.get(budget.meter)
            if not amount:
                continue
            start, end = bounds[budget.name]
            if (start is not None and row.at < start) or (end is not None and row.at >= end):
                continue
            spent[(budget.name, value)] = spent.get((budget.name, value), ZERO) + amount
    by_name = {b.name: b for b in active}
    out = []
    for (name, value), amount in spent.items():
        budget = by_name[name]
        start, end = bounds[name]
        forecast = forecast_window(budget, amount, now)
        out.append(
            Utilisation(
                budget,
                value,
                start,
                end,
                amount,
                None if forecast is None else forecast.projected_spend,
                None if forecast is None else forecast.projected_cross_at,
            )
        )
    return sorted(out, key=lambda u: (-(u.ratio or ZERO), u.budget.name, u.subject_id))


def utilisation_table(lines: list[Utilisation]) -> Table:
    """As a table."""
    columns = [
        "budget",
        "scope",
        "subject_id",
        "meter",
        "window",
        "limit",
        "spent",
        "utilisation_pct",
        "projected",
        "projected_cross_at",
        "resets_at",
    ]
    rows = [
        (
            u.budget.name,
            u.budget.scope,
            u.subject_id,
            u.budget.meter,
            str(u.budget.window),
            u.budget.limit,
            u.spent,
            None if u.ratio is None else (u.ratio * 100).quantize(Decimal("0.01")),
            None if u.projected is None else u.projected.quantize(Decimal("0.000001")),
            u.projected_cross_at,
            u.reset_at,
        )
        for u in lines
    ]
    return Table(
        "budget utilisation",
        columns,
        rows,
        ["projected: linear over the elapsed part of each budget's own window"],
    )
